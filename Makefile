# Eraser developer commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help install demo test lint docs bench chaos up down image-check clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/eraser: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e ./deploy/client  # eraser_client, the upstream services' client
	@touch $@

install: $(BIN)/eraser ## Create .venv and install Eraser with its test tools

demo: install ## Erase one tenant from the 12-service bakery estate through the chord (no server)
	$(BIN)/eraser demo

# Redis: ERASER_TEST_REDIS_URL and ERASER_TEST_REDIS_DBS (tests/redis_dbs.py). The tests that
# install from the package index into a fresh environment run only when asked:
# make test PYTEST_ARGS="-m fresh_install" (CI does, once).
test: install ## Run the test suite (tests needing a server skip if it is down, unless ERASER_REQUIRE_SERVICES=1)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy --strict and a strict docs build
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs: install ## Build the documentation site into site/ (mkdocs, strict: broken links fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install ## Run the benchmarks against the local PostgreSQL, MariaDB and Redis (prints figures)
	$(BIN)/python bench/erase.py
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/partitions.py
	$(BIN)/python bench/engines.py

chaos: install ## Kill workers, flush Redis, cut connections over many jobs; print the outcome
	$(BIN)/python bench/chaos.py

up: install ## The bakery estate on the local PostgreSQL + Redis (REPLACE=1: replace what it did not create)
	$(BIN)/python deploy/up.py up $(if $(REPLACE),--replace,)

down: ## Stop what `make up` started (DROP=1 also drops its databases)
	$(BIN)/python deploy/up.py down $(if $(DROP),--drop,)

image-check: install ## Build the image with podman for amd64 and arm64 (qemu) and run a job in each (root)
	bash deploy/check-image.sh amd64 arm64

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
