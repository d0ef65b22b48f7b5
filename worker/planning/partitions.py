"""Which tables may lose the subject's rows a whole partition at a time.

A table partitioned by LIST on exactly its one subject column gives each tenant a
partition of its own where the operator made one (``FOR VALUES IN ('acme')``).
Removing that partition's rows at once does what removing them row by row would, as
long as nothing the database would do per row is lost: no row-level work (triggers,
rules, history), no reference into the table the walk would not take first.

Which partition holds the subject, and whether its bound is exactly the subject's
value, is asked of the database at erasure time (``worker.execution.partitions``).
"""

from __future__ import annotations

from models.erasure import TableAction
from worker.catalog.model import TableName
from worker.catalog.partitions import LIST
from worker.planning.model import EdgeMode, Plan


def partition_tables(plan: Plan) -> dict[TableName, str]:
    """Tables whose subject partition may be removed whole -> their subject column."""
    found: dict[TableName, str] = {}
    for table in sorted(plan.anchors):
        if unsuitable(plan, table) is None:
            found[table] = plan.anchors[table][0]
    return found


def unsuitable(plan: Plan, table: TableName) -> str | None:
    """Why ``table``'s rows must go row by row, or None when a partition may go whole."""
    info = plan.info(table)
    scheme = info.partition_scheme
    columns = plan.anchors.get(table, ())
    if scheme is None or scheme.method != LIST:
        # A hash partition holds many subjects; a range partition, many values.
        return "not partitioned by LIST"
    if len(columns) != 1 or scheme.columns != columns:
        return "not partitioned on exactly its one subject column"
    if columns[0] in info.inexact:
        return "its subject column's equality is not byte equality"
    if plan.actions.get(table) is not TableAction.DELETE or table in plan.orphan_links:
        return "its rows are not simply deleted"
    if table in plan.cycle_of:
        return "it is in a foreign-key cycle"
    if info.delete_triggers or info.rules or info.system_versioned:
        # Row-level work a TRUNCATE or DROP would skip: the triggers would not fire.
        return "it has DELETE triggers, rules or row history"
    edges = plan.children.get(table, [])
    incoming = plan.catalog.incoming(table)
    if any(e.mode is not EdgeMode.DELETE or e.fk.child == table for e in edges):
        return "a reference into it is cleared or points back into it"
    if any(plan.actions.get(e.fk.child) is not TableAction.DELETE for e in edges):
        return "rows referencing it are kept, anonymized or unlinked"
    if {e.fk for e in edges} != set(incoming):
        return "a table the erasure keeps references it"
    return None
