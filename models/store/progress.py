"""A task's counts: what its executions removed, table by table. Counts of earlier
slices and of executions that died are kept: their rows are gone and cannot be
counted again. What an execution's batches committed after its last heartbeat is
read back from the target's ledger and folded in (``settle``); where no ledger was
kept, the counts are marked inexact instead (``mark_inexact``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from models.erasure import TableAction, TableOutcome
from models.store.tables import Attempt, AttemptOutcome, Task


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


#: An attempt's ``ledger_seq`` once its counts were settled from the target's ledger.
SETTLED = -1


def unsettled(session: orm.Session, task: Task) -> list[str]:
    """Lease ids of ``task``'s ended executions that kept a ledger and whose counts
    were not yet settled from it."""
    rows = session.scalars(
        sa.select(Attempt.lease_id).where(
            Attempt.task_id == task.id,
            Attempt.lease_id != task.lease_id,
            Attempt.outcome != AttemptOutcome.RUNNING,
            Attempt.ledger_seq >= 0,
        )
    ).all()
    return [str(r) for r in rows]


def settle(
    session: orm.Session,
    task: Task,
    truths: Mapping[str, Mapping[str, int]],
    removing: Collection[TableAction],
) -> list[str]:
    """Replace the counts of ``task``'s ended executions with what their ledger rows
    in the target add up to (``truths``, by lease id; an execution absent from it
    committed nothing that survived). ``task`` is locked by the caller; the target's
    rows were read after the executions' sessions ended. What a dead execution's last
    heartbeat did not carry is added; what a server crash undid after the execution
    counted it (asynchronous commits) is taken back. Idempotent: a settled execution
    is marked so (its rows may then go) and never settled again."""
    found = unsettled(session, task)
    if not found:
        return []
    attempts = session.scalars(
        sa.select(Attempt).where(Attempt.task_id == task.id, Attempt.lease_id.in_(found))
    ).all()
    for attempt in attempts:
        truth = {k: int(v) for k, v in truths.get(attempt.lease_id, {}).items() if v}
        had = {k: int(v) for k, v in (attempt.tables or {}).items()}
        delta = {k: truth.get(k, 0) - had.get(k, 0) for k in {*truth, *had}}
        change = as_outcomes({k: v for k, v in delta.items() if v})
        add_rows(task, change, removed_rows(change, removing))
        attempt.tables = truth
        attempt.rows = removed_rows(as_outcomes(truth), removing)
        attempt.ledger_seq = SETTLED
    return sorted(found)
