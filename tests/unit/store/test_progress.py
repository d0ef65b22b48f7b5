"""``models.store.progress``: per-table counts add up across executions; only the
actions that remove rows count toward a task's total."""

from __future__ import annotations

from models.erasure import TableAction, TableOutcome
from models.store.progress import add_rows, as_outcomes, merged_rows, removed_rows
from models.store.tables import Task

REMOVING = {TableAction.DELETE, TableAction.UNLINK}


def _outcome(table: str, action: TableAction, rows: int) -> TableOutcome:
    return TableOutcome(table=table, action=action, rows=rows)


def test_counts_of_the_same_table_and_action_add_up_sorted() -> None:
    before = [{"table": "orders", "action": "delete", "rows": 3}]
    now = [
        _outcome("orders", TableAction.DELETE, 2),
        _outcome("customers", TableAction.ANONYMIZE, 1),
    ]

    assert merged_rows(before, now) == [
        {"table": "customers", "action": "anonymize", "rows": 1},
        {"table": "orders", "action": "delete", "rows": 5},
    ]


def test_a_task_keeps_earlier_counts_and_totals_only_removed_rows() -> None:
    task = Task(service="shop", rows=[{"table": "orders", "action": "delete", "rows": 4}])
    task.total_rows = 4
    tables = [
        _outcome("orders", TableAction.DELETE, 6),
        _outcome("customers", TableAction.ANONYMIZE, 2),
    ]

    done = add_rows(task, tables, removed_rows(tables, REMOVING))

    assert done == 8
    assert task.total_rows == 10
    assert {r["table"]: r["rows"] for r in task.rows} == {"orders": 10, "customers": 2}


def test_heartbeat_counts_read_back_as_outcomes() -> None:
    counts = {"public.orders:delete": 7, "odd:name:unlink": 1}

    assert as_outcomes(counts) == [
        _outcome("public.orders", TableAction.DELETE, 7),
        _outcome("odd:name", TableAction.UNLINK, 1),
    ]
