"""Differential test (issue 20): Eraser against the database's own cascade.

Hypothesis generates multi-tenant schemas of 4-12 tables and their data
(``tests.differential.schemas``); tenant 1 is erased at batch sizes 1, 3 and the
default, and each outcome is compared, table by table and row by row, with the
cascade oracle run in a twin database (``tests.differential.oracle``). See
``tests.differential.compare`` for what counts as a pass.

Size: ``ERASER_DIFF_EXAMPLES`` schemas per engine (default 8, affordable in CI);
set it higher to search on purpose, e.g. ``ERASER_DIFF_EXAMPLES=200``. The run is
derandomized (the same schemas every time) unless ``ERASER_DIFF_SEED`` is set, which
seeds a different series; ``ERASER_DIFF_SHRINK=1`` shrinks a failure to a minimal
case. Nothing is written to a ``.hypothesis`` directory.
A failure prints the case as SQL (``note``) and the check that failed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, note, seed, settings

from tests.conftest import make_db
from tests.differential.compare import Target, check
from tests.differential.ddl import Schemas
from tests.differential.loading import script
from tests.differential.schemas import Case, cases
from tests.differential.sessions import bounded_engine

EXAMPLES = int(os.environ.get("ERASER_DIFF_EXAMPLES", "8"))
SEED = os.environ.get("ERASER_DIFF_SEED")
#: Shrinking a failure to a minimal case takes minutes; on when asked for.
SHRINK = os.environ.get("ERASER_DIFF_SHRINK") == "1"

Test = TypeVar("Test", bound=Callable[..., Any])

_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=SEED is None,
    print_blob=True,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def _seeded(test: Test) -> Test:
    return seed(int(SEED))(test) if SEED is not None else test


def _target(backend: str, tmp_path: Path) -> Iterator[Target]:
    (tmp_path / "target").mkdir()
    (tmp_path / "twin").mkdir()
    main = make_db(backend, tmp_path / "target")
    twin = make_db(backend, tmp_path / "twin")
    db = next(main)
    other = next(twin)
    engine, twin_engine = bounded_engine(db.url), bounded_engine(other.url)
    try:
        yield Target(db.url, engine, twin_engine, Schemas(db.default_schema, db.other_schema))
    finally:
        engine.dispose()
        twin_engine.dispose()
        for gen in (twin, main):
            next(gen, None)


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Iterator[Target]:
    yield from _target("sqlite", tmp_path)


@pytest.fixture
def pg_target(tmp_path: Path) -> Iterator[Target]:
    yield from _target("postgresql", tmp_path)


@pytest.fixture
def mysql_target(tmp_path: Path) -> Iterator[Target]:
    yield from _target("mysql", tmp_path)


def _run(target: Target, case: Case) -> None:
    note(case.describe())
    note(script(case, target.schemas))
    check(target, case)


@_seeded
@_SETTINGS
@given(case=cases("sqlite"))
def test_differential_sqlite(sqlite_target: Target, case: Case) -> None:
    _run(sqlite_target, case)


@pytest.mark.postgres
@_seeded
@_SETTINGS
@given(case=cases("postgresql"))
def test_differential_postgresql(pg_target: Target, case: Case) -> None:
    _run(pg_target, case)


@pytest.mark.mysql
@_seeded
@_SETTINGS
@given(case=cases("mysql"))
def test_differential_mariadb(mysql_target: Target, case: Case) -> None:
    _run(mysql_target, case)
