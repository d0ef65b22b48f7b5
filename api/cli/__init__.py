"""The ``eraser`` command line (Typer + Rich).

``main`` is the console script's entry point. It imports only the command tree; each
command imports what it uses when it runs, so ``eraser --help`` and ``eraser worker
--help`` answer without a broker, a registry or a database, and the one-database
commands never import FastAPI, uvicorn or Flower.

Errors print one line (``eraser: error: ...``) and exit 2; no traceback, no DSN
password, no subject value.
"""

from __future__ import annotations

from api.cli.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_MATCHED,
    EXIT_OK,
    EXIT_UNVERIFIED,
)
from api.cli.main import main
from api.cli.policy import parse_policy

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_MATCHED",
    "EXIT_OK",
    "EXIT_UNVERIFIED",
    "main",
    "parse_policy",
]
