"""Reading what an erasure left in a target database: the rows of a table, a dump of
several (compared before and after a refusal), and a PostgreSQL erasure next to its
dry run's prediction. The subject is 42 throughout."""

from __future__ import annotations

from typing import Any

from models.erasure import ErasureReport
from tests.conftest import TargetDB
from worker.catalog.reflection import reflect
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

SUBJECT = 42
Rows = list[tuple[Any, ...]]


def rows(db: TargetDB, table: str, order: str = "1") -> Rows:
    """Every row of ``table`` (a quoted SQL name), in ``order``."""
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}")]


def dump(db: TargetDB, *tables: str) -> dict[str, Rows]:
    """Every row of every table, sorted: compared before and after a refusal."""
    return {t: sorted(rows(db, t), key=repr) for t in tables}


def pg_erase(
    pg: TargetDB, columns: list[str], server_batches: bool = True, fk_checks: str = "auto"
) -> tuple[int, ErasureReport]:
    """Erase ``SUBJECT`` in batches of one row; the dry run's total and the report."""
    plan = build_plan(reflect(pg.engine), columns)
    expected = dry_run(pg.engine, plan, SUBJECT).total_rows
    options = ExecutionOptions(batch_size=1, server_batches=server_batches, fk_checks=fk_checks)
    return expected, erase(pg.engine, plan, SUBJECT, options)
