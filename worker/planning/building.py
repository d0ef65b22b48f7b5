"""Turn a catalog, a subject column and table policies into an erasure plan.

A table's rows *belong to the subject* when the table has the subject column and it
holds the subject's value (a direct match), or when they reference, through a foreign
key, rows that belong to the subject (a semi-join path). Membership flows from a
referenced row to the rows referencing it, never the other way, and not through
``ON DELETE SET NULL``/``SET DEFAULT`` references: those say that the referencing row
outlives the referenced one, so the engine clears the reference instead.

The plan lists one step per table, children before parents, with the predicate that
selects the subject's rows, how each cycle is broken, and warnings. It is
deterministic and carries the fingerprint of the schema it was made from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from models.erasure import TableAction, TablePolicy
from worker.catalog.model import SET_DEFAULT, SET_NULL, Catalog, ForeignKey, TableName
from worker.dialects import dialect_named
from worker.exceptions import PolicyConflict, UnknownSubjectColumn, UnsupportedTable
from worker.graph import children_first
from worker.planning.cycles import cycle_strategy
from worker.planning.descriptions import (
    describe_nullify,
    describe_predicate,
    describe_reassign,
    index_warnings,
)
from worker.planning.model import REMOVING, Cycle, Edge, EdgeMode, Plan, Step
from worker.planning.policies import (
    check_anonymize,
    check_reassign,
    resolve_policies,
    virtual_fk,
)

#: Actions whose tables take no part in carrying membership to the rows below them.
_NOT_CARRIED = (TableAction.KEEP, TableAction.DELETE_IF_ORPHANED, TableAction.REASSIGN)


def build_plan(
    catalog: Catalog,
    subject_columns: Sequence[str],
    policies: Mapping[str, TablePolicy] | None = None,
    virtual_fks: Sequence[tuple[Sequence[str], Sequence[str]]] = (),
) -> Plan:
    """Plan the erasure of the subject identified by ``subject_columns``.

    Each entry is ``column`` (every table that has it), ``table.column`` or
    ``schema.table.column``. ``virtual_fks`` are (child columns, parent columns)
    pairs, each column written ``table.column`` or ``schema.table.column``: references
    the database does not declare but the erasure must follow. Raises
    ``UnknownSubjectColumn``, ``UnknownTable``, ``PolicyConflict`` or
    ``UnsatisfiablePlan`` before anything is touched.
    """
    catalog = catalog.with_foreign_keys([virtual_fk(catalog, c, p) for c, p in virtual_fks])
    policy_map = resolve_policies(catalog, policies or {})
    anchors = _anchors(catalog, subject_columns, policy_map)
    membership = _Membership(catalog, policy_map)
    membership.add(anchors)
    orphan_links = _orphan_links(catalog, policy_map, membership.actions)
    for table in orphan_links:
        membership.actions[table] = TableAction.DELETE_IF_ORPHANED
    # Rows owned by a shared row (its contacts, say) go with it.
    membership.propagate(sorted(orphan_links))
    actions = membership.actions
    reassigned = check_reassign(catalog, actions, policy_map, anchors)
    children, nullified = _child_edges(catalog, actions, set(reassigned))
    check_anonymize(catalog, actions, policy_map)
    order, cyclic = _removal_order(actions, children, orphan_links)
    cycles = [cycle_strategy(catalog, comp, children) for comp in cyclic]
    cycle_of = {t: c for c in cycles for t in c.tables}
    warnings = index_warnings(catalog, anchors, children, actions)
    warnings += _table_warnings(catalog, order, actions, children)
    steps = _steps(order, actions, anchors, children, orphan_links, cycle_of, nullified)
    steps += [
        Step(
            table=t,
            action=TableAction.REASSIGN,
            predicate=describe_reassign(t, children, policy_map[t]),
            anchor=False,
        )
        for t in reassigned
    ]
    touched = [
        *(t for t, a in actions.items() if a is not TableAction.KEEP),
        *nullified,
        *reassigned,
    ]
    _check_inherited(catalog, touched)
    _check_exact_keys(catalog, touched)
    return Plan(
        catalog=catalog,
        subject_columns=tuple(subject_columns),
        anchors=anchors,
        actions=actions,
        children=children,
        nullified=sorted(nullified),
        orphan_links=orphan_links,
        order=order,
        cycles=cycles,
        steps=steps,
        warnings=warnings,
        policies=policy_map,
        cycle_of=cycle_of,
        reassigned=reassigned,
    )


def _anchors(
    catalog: Catalog, subject_columns: Sequence[str], policy_map: Mapping[TableName, TablePolicy]
) -> dict[TableName, tuple[str, ...]]:
    """The tables holding the subject column (kept tables aside); refused when there is
    none and no shared table either."""
    anchors = _find_anchors(catalog, subject_columns)
    for table, pol in policy_map.items():
        if pol.action is TableAction.KEEP:
            anchors.pop(table, None)

    if not anchors and not any(
        p.action is TableAction.DELETE_IF_ORPHANED for p in policy_map.values()
    ):
        raise UnknownSubjectColumn(subject_columns)
    return anchors


class _Membership:
    """The tables whose rows belong to the subject, with the action each takes."""

    def __init__(self, catalog: Catalog, policy_map: Mapping[TableName, TablePolicy]) -> None:
        self.catalog = catalog
        self.policy_map = policy_map
        self.actions: dict[TableName, TableAction] = {}

    def action_of(self, table: TableName) -> TableAction:
        return self.policy_map.get(table, TablePolicy()).action

    def add(self, tables: Mapping[TableName, object]) -> None:
        for table in tables:
            self.actions[table] = self.action_of(table)
        self.propagate(sorted(tables))

    def propagate(self, frontier: list[TableName]) -> None:
        """Membership flows down every reference that is not SET NULL/DEFAULT."""
        while frontier:
            parent = frontier.pop(0)
            if self.actions[parent] is TableAction.KEEP:
                continue
            for fk in sorted(self.catalog.incoming(parent), key=_fk_sort_key):
                child_action = self.action_of(fk.child)
                if fk.on_delete in (SET_NULL, SET_DEFAULT) or child_action in _NOT_CARRIED:
                    continue
                if fk.child not in self.actions:
                    self.actions[fk.child] = child_action
                    frontier.append(fk.child)


def _orphan_links(
    catalog: Catalog,
    policy_map: Mapping[TableName, TablePolicy],
    actions: Mapping[TableName, TableAction],
) -> dict[TableName, list[ForeignKey]]:
    """Shared tables (``delete_if_orphaned``) -> the references from the subject's link
    rows into them."""
    orphan_links: dict[TableName, list[ForeignKey]] = {}
    for table, pol in sorted(policy_map.items()):
        if pol.action is not TableAction.DELETE_IF_ORPHANED:
            continue
        if table in actions:
            raise PolicyConflict(
                str(table),
                "delete_if_orphaned is for shared tables, but this table's rows belong "
                "to the subject directly (subject column or a reference to its rows)",
            )
        links = [fk for fk in catalog.incoming(table) if fk.child in actions]
        if not links:
            raise PolicyConflict(
                str(table), "delete_if_orphaned needs a link table that belongs to the subject"
            )
        orphan_links[table] = sorted(links, key=_fk_sort_key)
    return orphan_links


def _child_edges(
    catalog: Catalog, actions: Mapping[TableName, TableAction], reassigned: set[TableName]
) -> tuple[dict[TableName, list[Edge]], set[TableName]]:
    """Child edges of every table whose rows go away (or stay, for anonymize), and the
    tables whose SET NULL references into removed rows are cleared."""
    children: dict[TableName, list[Edge]] = {t: [] for t in catalog.tables}
    nullified: set[TableName] = set()
    for parent, parent_action in actions.items():
        for fk in catalog.incoming(parent):
            member_action = actions.get(fk.child)
            if fk.child in reassigned and fk.on_delete != SET_DEFAULT:
                if parent_action in REMOVING:
                    children[parent].append(Edge(fk, EdgeMode.REASSIGN))
            elif fk.on_delete in (SET_NULL, SET_DEFAULT):
                if parent_action in REMOVING:
                    mode = EdgeMode.NULLIFY if fk.on_delete == SET_NULL else EdgeMode.DATABASE
                    children[parent].append(Edge(fk, mode))
                    if mode is EdgeMode.NULLIFY:
                        nullified.add(fk.child)
            elif member_action is not None and member_action not in _NOT_CARRIED:
                children[parent].append(Edge(fk, EdgeMode.DELETE))
        children[parent].sort(key=lambda e: _fk_sort_key(e.fk))
    return children, nullified


def _removal_order(
    actions: Mapping[TableName, TableAction],
    children: Mapping[TableName, list[Edge]],
    orphan_links: Mapping[TableName, list[ForeignKey]],
) -> tuple[list[TableName], list[list[TableName]]]:
    """Children first, and the cyclic components. Shared (orphan) tables, and the rows
    they own, are emptied first: their predicate reads the link rows, which must still
    be there."""
    delete_children: dict[TableName, list[TableName]] = {
        p: [e.fk.child for e in edges if e.mode is EdgeMode.DELETE]
        for p, edges in children.items()
        if p in actions
    }
    order, cyclic = children_first(actions, delete_children)
    owned: set[TableName] = set(orphan_links)
    stack = list(orphan_links)
    while stack:
        parent = stack.pop()
        for kid in delete_children.get(parent, []):
            link = any(kid == fk.child for fk in orphan_links.get(parent, []))
            if kid not in owned and not link:
                owned.add(kid)
                stack.append(kid)
    order = [t for t in order if t in owned] + [t for t in order if t not in owned]
    return order, cyclic


def _table_warnings(
    catalog: Catalog,
    order: list[TableName],
    actions: Mapping[TableName, TableAction],
    children: Mapping[TableName, list[Edge]],
) -> list[str]:
    """Triggers, system versioning, unvalidated keys and SET DEFAULT references."""
    warnings = []
    for table in order:
        info = catalog.tables[table]
        if info.delete_triggers:
            names = ", ".join(t.name for t in info.delete_triggers)
            warnings.append(
                f"{table} has delete trigger(s) {names}: rows they write are caught by the "
                "verification pass"
            )
        if info.system_versioned and actions.get(table) is not TableAction.KEEP:
            warnings.append(
                f"{table} is system-versioned: the subject's earlier row versions stay in"
                " its history (FOR SYSTEM_TIME ALL) until DELETE HISTORY removes them"
            )
        warnings += [
            f"{fk.describe()} is NOT VALID: existing rows may violate it"
            for fk in info.foreign_keys
            if not fk.validated
        ]
        warnings += [
            f"{edge.fk.describe()} is ON DELETE SET DEFAULT: the database resets "
            "those references and they are not counted"
            for edge in children.get(table, [])
            if edge.mode is EdgeMode.DATABASE
        ]
    return warnings


def _steps(
    order: list[TableName],
    actions: Mapping[TableName, TableAction],
    anchors: Mapping[TableName, tuple[str, ...]],
    children: Mapping[TableName, list[Edge]],
    orphan_links: Mapping[TableName, list[ForeignKey]],
    cycle_of: Mapping[TableName, Cycle],
    nullified: set[TableName],
) -> list[Step]:
    steps = [
        Step(
            table=t,
            action=actions[t],
            predicate=describe_predicate(t, anchors, children, orphan_links, actions),
            anchor=t in anchors or t in orphan_links,
            cycle=cycle_of[t].strategy.value if t in cycle_of else None,
        )
        for t in order
    ]
    steps += [
        Step(
            table=t,
            action=TableAction.NULLIFY,
            predicate=describe_nullify(t, children),
            anchor=False,
        )
        for t in sorted(nullified - set(actions))
    ]
    return steps


def _check_inherited(catalog: Catalog, touched: Sequence[TableName]) -> None:
    for table in touched:
        if catalog.tables[table].inherited:
            raise UnsupportedTable(
                str(table),
                "other tables inherit from it (INHERITS): its statements would reach their"
                " rows too",
            )


def _check_exact_keys(catalog: Catalog, touched: Sequence[TableName]) -> None:
    """Refuse a foreign key into a touched table whose columns compare ignoring case or
    accents (PostgreSQL ``citext``, a nondeterministic collation): the database takes
    ``'A'`` as a reference to ``'a'``, while the walk matches references to the keys
    it removed byte for byte, and would leave them behind."""
    dialect = dialect_named(catalog.dialect)
    for parent in touched:
        for fk in catalog.incoming(parent):
            loose = set(fk.parent_columns) & catalog.tables[fk.parent].inexact
            loose |= set(fk.child_columns) & catalog.tables[fk.child].inexact
            columns = catalog.tables[fk.parent].columns
            odd = [c for c in fk.parent_columns if not dialect.addressable(columns[c].type)]
            if odd:
                raise UnsupportedTable(
                    str(fk.child),
                    f"its foreign key {fk.name} references {', '.join(odd)}, whose values"
                    " (JSON, arrays, MySQL FLOAT) the erasure cannot match one by one",
                )
            if loose:
                raise UnsupportedTable(
                    str(fk.child),
                    f"its foreign key {fk.name} compares {', '.join(sorted(loose))} ignoring"
                    " case or accents (citext or a nondeterministic collation); the erasure"
                    " matches keys exactly and could leave references behind",
                )


def _fk_sort_key(fk: ForeignKey) -> tuple[TableName, tuple[str, ...], TableName]:
    return (fk.child, fk.child_columns, fk.parent)


def _find_anchors(
    catalog: Catalog, subject_columns: Sequence[str]
) -> dict[TableName, tuple[str, ...]]:
    anchors: dict[TableName, list[str]] = {}
    for spec in subject_columns:
        parts = spec.split(".")
        if len(parts) == 1:
            column = parts[0]
            for name, info in catalog.tables.items():
                if column in info.columns:
                    anchors.setdefault(name, []).append(column)
            continue
        table_spec, column = ".".join(parts[:-1]), parts[-1]
        try:
            table = catalog.resolve(table_spec)
        except KeyError:
            raise UnknownSubjectColumn([spec]) from None
        if column not in catalog.tables[table].columns:
            raise UnknownSubjectColumn([spec])
        anchors.setdefault(table, []).append(column)
    return {t: tuple(dict.fromkeys(cols)) for t, cols in anchors.items()}
