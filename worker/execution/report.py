"""The report of an erasure: rows per table and action, in plan order."""

from __future__ import annotations

import time
from collections.abc import Sequence

from models.erasure import ErasureReport, TableAction, TableOutcome
from worker.catalog.model import TableName
from worker.planning.model import REMOVING, Plan


def outcomes(plan: Plan, counts: dict[tuple[TableName, TableAction], int]) -> list[TableOutcome]:
    """Rows per table and action, in plan order; kept tables left out."""
    result = []
    for table in plan.order:
        action = plan.actions[table]
        if action is TableAction.KEEP:
            continue
        rows = counts.get((table, action), 0)
        result.append(TableOutcome(table=str(table), action=action, rows=rows))
    for table in plan.nullified:
        rows = counts.get((table, TableAction.NULLIFY), 0)
        result.append(TableOutcome(table=str(table), action=TableAction.NULLIFY, rows=rows))
    for table in plan.reassigned:
        rows = counts.get((table, TableAction.REASSIGN), 0)
        result.append(TableOutcome(table=str(table), action=TableAction.REASSIGN, rows=rows))
    return result


def report(
    plan: Plan,
    tables: list[TableOutcome],
    verified: bool,
    passes: int,
    started: float,
    checked: list[str],
    served: Sequence[str] = (),
    compression: str = "",
) -> ErasureReport:
    """An erasure's report (not a dry run's)."""
    return ErasureReport(
        dry_run=False,
        tables=tables,
        total_rows=sum(o.rows for o in tables if o.action in REMOVING),
        verified=verified,
        passes=passes,
        schema_fingerprint=plan.fingerprint,
        warnings=list(plan.warnings),
        elapsed_seconds=round(time.monotonic() - started, 3),
        checked_by_eraser=checked,
        batched_in_server=list(served),
        wal_compression=compression,
    )
