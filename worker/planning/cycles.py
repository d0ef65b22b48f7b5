"""How the rows of each foreign-key cycle are removed, as the database allows."""

from __future__ import annotations

from collections.abc import Mapping

from worker.catalog.model import Catalog, TableName
from worker.dialects import dialect_named
from worker.exceptions import UnsatisfiablePlan
from worker.graph import children_first, find_cycle, strongly_connected_components
from worker.planning.model import Cycle, CycleStrategy, Edge, EdgeMode


def cycle_strategy(
    catalog: Catalog, component: list[TableName], children: Mapping[TableName, list[Edge]]
) -> Cycle:
    """How the rows of one cyclic component are removed: leaves first for a tree, a
    nullable reference cleared where there is one, else together in one transaction as
    the database allows (deferred checks, writable CTEs), or refused where it cannot
    defer them (``UnsatisfiablePlan``)."""
    members = set(component)
    edges = [
        e.fk
        for t in component
        for e in children.get(t, [])
        if e.mode is EdgeMode.DELETE and e.fk.child in members
    ]

    def succ_all(n: TableName) -> list[TableName]:
        return [fk.child for fk in edges if fk.parent == n]

    path = tuple(str(t) for t in find_cycle(component, succ_all))
    hard_edges = [fk for fk in edges if not fk.nullable]

    def succ_hard(n: TableName) -> list[TableName]:
        return [fk.child for fk in hard_edges if fk.parent == n]

    hard_components = [
        c
        for c in strongly_connected_components(component, succ_hard)
        if len(c) > 1 or c[0] in succ_hard(c[0])
    ]
    self_only = len(component) == 1
    if self_only:
        return Cycle(tuple(component), path, CycleStrategy.TREE, hard=bool(hard_components))
    if not hard_components:
        return Cycle(tuple(component), path, CycleStrategy.NULLIFY, hard=False)
    dialect = dialect_named(catalog.dialect)
    hard_path = tuple(str(t) for t in find_cycle(hard_components[0], succ_hard))
    if not dialect.defers_checks:
        raise UnsatisfiablePlan(
            hard_path,
            "every reference in it is NOT NULL and MySQL/MariaDB check foreign keys row by "
            "row with no way to defer them; make one of these columns nullable",
        )
    if dialect.defers_all_checks:
        return Cycle(tuple(component), hard_path, CycleStrategy.SQLITE_DEFER, hard=True)
    # Deferring the deferrable references works if the others leave an order.
    immediate: dict[TableName, list[TableName]] = {}
    for fk in edges:
        if not fk.deferrable:
            immediate.setdefault(fk.parent, []).append(fk.child)
    order, still_cyclic = children_first(component, immediate)
    if not still_cyclic:
        return Cycle(tuple(component), hard_path, CycleStrategy.DEFERRED, True, tuple(order))
    return Cycle(tuple(component), hard_path, CycleStrategy.WRITABLE_CTE, hard=True)
