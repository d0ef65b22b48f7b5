"""A task's counts: what its executions removed, table by table. Counts of earlier
slices and of executions that died are kept: their rows are gone and cannot be
counted again."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from models.erasure import TableAction, TableOutcome
from models.store.tables import Task


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
