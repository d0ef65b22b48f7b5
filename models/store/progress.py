"""A task's counts: what its executions removed, table by table. Counts of earlier
slices and of executions that died are kept: their rows are gone and cannot be
counted again. What an execution's batches committed after its last heartbeat is
read back from the target's ledger and folded in (``settle``); where no ledger was
kept, the counts are marked inexact instead (``mark_inexact``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from models.erasure import TableAction, TableOutcome
from models.store.tables import Attempt, Task


def merged_rows(previous: Sequence[dict[str, Any]], tables: Sequence[TableOutcome]) -> list[Any]:
    """Per-table counts recorded before plus this execution's, sorted."""
    merged: dict[tuple[str, str], int] = {
        (str(r["table"]), str(r["action"])): int(r["rows"]) for r in previous
    }
    for t in tables:
        key = (t.table, str(t.action))
        merged[key] = merged.get(key, 0) + t.rows
    return [
        {"table": table, "action": action, "rows": rows}
        for (table, action), rows in sorted(merged.items())
    ]


def add_rows(task: Task, tables: Sequence[TableOutcome], removed: int) -> int:
    """Add an execution's per-table counts to ``task`` and ``removed`` (the rows of
    those that remove rows) to its total; returns the execution's rows."""
    task.rows = merged_rows(task.rows, tables)
    task.total_rows = task.total_rows + removed
    return sum(t.rows for t in tables)


def as_outcomes(counts: dict[str, Any]) -> list[TableOutcome]:
    """``{"table:action": rows}`` (the engine's progress shape) as outcomes."""
    outcomes = []
    for key, rows in counts.items():
        table, _, action = key.rpartition(":")
        outcomes.append(TableOutcome(table=table, action=TableAction(action), rows=int(rows)))
    return outcomes


def removed_rows(tables: Sequence[TableOutcome], removing: Collection[TableAction]) -> int:
    """The rows of ``tables`` whose action is one of ``removing``."""
    return sum(t.rows for t in tables if t.action in removing)


def counts_of(tables: Sequence[TableOutcome]) -> dict[str, int]:
    """Outcomes in the engine's progress shape, ``{"table:action": rows}``."""
    counts: dict[str, int] = {}
    for t in tables:
        key = f"{t.table}:{t.action}"
        counts[key] = counts.get(key, 0) + t.rows
    return counts


def mark_inexact(task: Task) -> None:
    """An execution may have removed rows nobody counted (it died, or lost its
    connection while a commit was on the wire, and kept no ledger): the task's counts
    are a lower bound from now on, with no upper bound known."""
    task.counts_exact = False
    task.rows_at_most = None


@dataclass(frozen=True)
class Folded:
    """What one execution's ledger rows past its watermark add (``added``, in the
    progress shape) and the seq they reach, computed from the watermark ``since``."""

    since: int | None
    last: int
    added: Mapping[str, int]


def settle(
    session: orm.Session,
    task: Task,
    folds: Mapping[str, Folded],
    removing: Collection[TableAction],
) -> list[str]:
    """Fold other executions' ledger rows into ``task``'s counts (``task`` locked by
    the caller). Idempotent: an execution is folded only if its watermark is still
    the one ``since`` was computed from, and its watermark then moves to ``last``.
    Returns the executions whose ledger rows the job store now holds (their rows in
    the target may go)."""
    if not folds:
        return []
    attempts = session.scalars(
        sa.select(Attempt).where(Attempt.task_id == task.id, Attempt.lease_id.in_(sorted(folds)))
    ).all()
    held: list[str] = []
    for attempt in attempts:
        fold = folds[attempt.lease_id]
        if attempt.lease_id == task.lease_id or attempt.ledger_seq != fold.since:
            continue
        tables = as_outcomes(dict(fold.added))
        removed = removed_rows(tables, removing)
        add_rows(task, tables, removed)
        merged = dict(attempt.tables or {})
        for key, rows in fold.added.items():
            merged[key] = int(merged.get(key, 0)) + int(rows)
        attempt.tables = merged
        attempt.rows = (attempt.rows or 0) + removed
        attempt.ledger_seq = fold.last
        held.append(attempt.lease_id)
    return held


def watermarks(session: orm.Session, task_id: int) -> dict[str, int | None]:
    """Each execution's watermark (its attempt's ``ledger_seq``), by lease id."""
    rows = session.execute(
        sa.select(Attempt.lease_id, Attempt.ledger_seq).where(Attempt.task_id == task_id)
    ).all()
    return {str(lease): seq for lease, seq in rows}
