"""What a plan says in words: each step's predicate, and the warnings."""

from __future__ import annotations

from collections.abc import Mapping

from models.erasure import TableAction, TablePolicy
from worker.catalog.model import Catalog, ForeignKey, TableName
from worker.planning.model import Edge, EdgeMode


def index_warnings(
    catalog: Catalog,
    anchors: Mapping[TableName, tuple[str, ...]],
    children: Mapping[TableName, list[Edge]],
    actions: Mapping[TableName, TableAction],
) -> list[str]:
    warnings: list[str] = []
    for table, cols in sorted(anchors.items()):
        info = catalog.tables[table]
        for col in cols:
            if not info.has_index_on([col]):
                warnings.append(
                    f"no index on {table}({col}): every batch scans the table to find the "
                    "subject's rows"
                )
    seen: set[tuple[TableName, tuple[str, ...]]] = set()
    for parent in sorted(actions):
        for edge in children.get(parent, []):
            fk = edge.fk
            key = (fk.child, fk.child_columns)
            if key in seen:
                continue
            seen.add(key)
            if not catalog.tables[fk.child].has_index_on(fk.child_columns):
                names = ", ".join(fk.child_columns)
                warnings.append(
                    f"no index on {fk.child}({names}) for {fk.describe()}: every delete from "
                    f"{fk.parent} scans {fk.child}"
                )
    return warnings


def describe_predicate(
    table: TableName,
    anchors: Mapping[TableName, tuple[str, ...]],
    children: Mapping[TableName, list[Edge]],
    orphan_links: Mapping[TableName, list[ForeignKey]],
    actions: Mapping[TableName, TableAction],
) -> str:
    parts = [f"{col} = :subject" for col in anchors.get(table, ())]
    for parent, edges in sorted(children.items()):
        for edge in edges:
            fk = edge.fk
            if fk.child != table or edge.mode is not EdgeMode.DELETE or parent not in actions:
                continue
            cols = ", ".join(fk.child_columns)
            pcols = ", ".join(fk.parent_columns)
            parts.append(f"({cols}) IN subject rows of {fk.parent}({pcols})")
    if table in orphan_links:
        links = ", ".join(str(fk.child) for fk in orphan_links[table])
        parts.append(f"linked by the subject through {links} and by nobody else")
    return " OR ".join(parts) if parts else "(none)"


def describe_nullify(table: TableName, children: Mapping[TableName, list[Edge]]) -> str:
    refs = [
        f"({', '.join(e.fk.child_columns)}) -> {e.fk.parent}: set NULL"
        for edges in children.values()
        for e in edges
        if e.fk.child == table and e.mode is EdgeMode.NULLIFY
    ]
    return "; ".join(sorted(refs))


def describe_reassign(
    table: TableName, children: Mapping[TableName, list[Edge]], policy: TablePolicy
) -> str:
    refs = [
        f"({', '.join(e.fk.child_columns)}) -> {e.fk.parent}: set to the placeholder"
        f" {e.fk.parent}({', '.join(e.fk.parent_columns)}) = {policy.reassign_to!r}"
        for edges in children.values()
        for e in edges
        if e.fk.child == table and e.mode is EdgeMode.REASSIGN
    ]
    return "; ".join(sorted(refs))
