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

import datetime
import decimal
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import ScalarValue, TableAction, TablePolicy
from worker.catalog import (
    MYSQL,
    POSTGRESQL,
    SET_DEFAULT,
    SET_NULL,
    SQLITE,
    Catalog,
    ForeignKey,
    TableInfo,
    TableName,
)
from worker.dialects import addressable
from worker.exceptions import (
    InvalidSubjectValue,
    PolicyConflict,
    UnknownSubjectColumn,
    UnknownTable,
    UnsatisfiablePlan,
    UnsupportedTable,
)
from worker.graph import children_first, find_cycle, strongly_connected_components

#: Actions after which the subject's rows are gone from the table.
REMOVING = frozenset({TableAction.DELETE, TableAction.UNLINK, TableAction.DELETE_IF_ORPHANED})


class EdgeMode(StrEnum):
    """What the engine does with rows that reference a batch it is about to remove."""

    #: The referencing rows belong to the subject: remove them first (recursively).
    DELETE = "delete"
    #: The reference is ``ON DELETE SET NULL``: clear it explicitly, in batches.
    NULLIFY = "nullify"
    #: ``ON DELETE SET DEFAULT``: the database resets it when the parent goes.
    DATABASE = "database"


class CycleStrategy(StrEnum):
    """How the rows of a foreign-key cycle are removed."""

    #: A self-referencing table: rows go leaves first, deepest descendants before ancestors.
    TREE = "tree (children before parents, any depth)"
    #: A nullable reference in the cycle is cleared on rows that are being erased anyway.
    NULLIFY = "nullify a nullable foreign key on rows being erased"
    #: All constraints of the cycle are DEFERRABLE: rows go in one deferred transaction.
    DEFERRED = "deferred constraints in one transaction"
    #: PostgreSQL, constraints not deferrable: one statement with writable CTEs.
    WRITABLE_CTE = "one statement with writable CTEs"
    #: SQLite: ``PRAGMA defer_foreign_keys`` for the transaction.
    SQLITE_DEFER = "PRAGMA defer_foreign_keys for the transaction"


@dataclass(frozen=True)
class Edge:
    fk: ForeignKey
    mode: EdgeMode


@dataclass(frozen=True)
class Cycle:
    tables: tuple[TableName, ...]
    path: tuple[str, ...]
    strategy: CycleStrategy
    #: True when a cycle of NOT NULL references makes a grouped removal necessary.
    hard: bool
    #: For ``DEFERRED``: the order that satisfies the constraints that are not deferred.
    removal_order: tuple[TableName, ...] = ()


@dataclass(frozen=True)
class Step:
    """One table of the plan, in the order the engine empties tables."""

    table: TableName
    action: TableAction
    predicate: str
    anchor: bool
    cycle: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": str(self.table),
            "action": str(self.action),
            "predicate": self.predicate,
            "anchor": self.anchor,
            "cycle": self.cycle,
        }


@dataclass
class Plan:
    """The erasure plan for one database and one subject column specification."""

    catalog: Catalog
    subject_columns: tuple[str, ...]
    #: Anchor table -> its subject column(s).
    anchors: dict[TableName, tuple[str, ...]]
    #: Every table whose rows belong to the subject -> the action taken on them.
    actions: dict[TableName, TableAction]
    #: Parent table -> the references into it that the engine must deal with.
    children: dict[TableName, list[Edge]]
    #: Tables that keep their rows but have a SET NULL reference into removed rows.
    nullified: list[TableName]
    #: Shared tables (``delete_if_orphaned``) -> their link references.
    orphan_links: dict[TableName, list[ForeignKey]]
    order: list[TableName]
    cycles: list[Cycle]
    steps: list[Step]
    warnings: list[str]
    policies: dict[TableName, TablePolicy] = field(default_factory=dict)
    cycle_of: dict[TableName, Cycle] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.catalog.fingerprint

    def info(self, table: TableName) -> TableInfo:
        return self.catalog.tables[table]

    @cached_property
    def verifiable_by_own_column(self) -> frozenset[TableName]:
        """Tables whose remaining subject rows, if any, must hold the subject's value in
        their own subject column(s) once the erasure has run.

        A row belongs to the subject through its own column (depth 0) or by referencing
        an existing row that belongs to it (depth d + 1). Take the largest set S of
        removed tables (delete, unlink) such that every reference that carries
        membership into a table of S comes from a table of S. If no table of S holds a
        depth-0 row, none holds a depth-1 row (it would reference a depth-0 row of S),
        and so on: S is empty of the subject exactly when its own columns say so.
        Anonymized tables (whose rows stay) and shared tables are outside S, and so is
        every table they lead to: those are checked with their whole predicate. This
        turns the verification from scans of every table into index lookups.
        """
        removed = (TableAction.DELETE, TableAction.UNLINK)
        into: dict[TableName, list[TableName]] = {}
        for parent in self.actions:
            for edge in self.children.get(parent, []):
                if edge.mode is EdgeMode.DELETE:
                    into.setdefault(edge.fk.child, []).append(parent)
        chosen = {t for t, a in self.actions.items() if a in removed and t not in self.orphan_links}
        changed = True
        while changed:
            changed = False
            for table in sorted(chosen):
                if any(parent not in chosen for parent in into.get(table, [])):
                    chosen.discard(table)
                    changed = True
        return frozenset(chosen)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.catalog.dialect,
            "schema_fingerprint": self.fingerprint,
            "subject_columns": list(self.subject_columns),
            "steps": [s.as_dict() for s in self.steps],
            "cycles": [
                {"tables": [str(t) for t in c.tables], "path": list(c.path), "strategy": c.strategy}
                for c in self.cycles
            ],
            "warnings": list(self.warnings),
        }


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
    catalog = catalog.with_foreign_keys([_virtual_fk(catalog, c, p) for c, p in virtual_fks])
    policy_map = _resolve_policies(catalog, policies or {})
    anchors = _find_anchors(catalog, subject_columns)
    for table, pol in policy_map.items():
        if pol.action is TableAction.KEEP:
            anchors.pop(table, None)
    if not anchors and not any(
        p.action is TableAction.DELETE_IF_ORPHANED for p in policy_map.values()
    ):
        raise UnknownSubjectColumn(subject_columns)

    actions: dict[TableName, TableAction] = {}
    children: dict[TableName, list[Edge]] = {t: [] for t in catalog.tables}
    nullified: set[TableName] = set()

    def action_of(table: TableName) -> TableAction:
        return policy_map.get(table, TablePolicy()).action

    def propagate(frontier: list[TableName]) -> None:
        """Membership flows down every reference that is not SET NULL/DEFAULT."""
        while frontier:
            parent = frontier.pop(0)
            if actions[parent] is TableAction.KEEP:
                continue
            for fk in sorted(catalog.incoming(parent), key=_fk_sort_key):
                child_action = action_of(fk.child)
                if fk.on_delete in (SET_NULL, SET_DEFAULT):
                    continue
                if child_action in (TableAction.KEEP, TableAction.DELETE_IF_ORPHANED):
                    continue
                if fk.child not in actions:
                    actions[fk.child] = child_action
                    frontier.append(fk.child)

    for table in anchors:
        actions[table] = action_of(table)
    propagate(sorted(anchors))

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
    for table in orphan_links:
        actions[table] = TableAction.DELETE_IF_ORPHANED
    # Rows owned by a shared row (its contacts, say) go with it.
    propagate(sorted(orphan_links))

    # Child edges of every table whose rows go away (or stay, for anonymize).
    for parent, parent_action in actions.items():
        for fk in catalog.incoming(parent):
            member_action = actions.get(fk.child)
            if fk.on_delete in (SET_NULL, SET_DEFAULT):
                if parent_action in REMOVING:
                    mode = EdgeMode.NULLIFY if fk.on_delete == SET_NULL else EdgeMode.DATABASE
                    children[parent].append(Edge(fk, mode))
                    if mode is EdgeMode.NULLIFY:
                        nullified.add(fk.child)
            elif member_action is not None and member_action not in (
                TableAction.KEEP,
                TableAction.DELETE_IF_ORPHANED,
            ):
                children[parent].append(Edge(fk, EdgeMode.DELETE))
        children[parent].sort(key=lambda e: _fk_sort_key(e.fk))

    _check_anonymize(catalog, actions, policy_map)

    delete_children: dict[TableName, list[TableName]] = {
        p: [e.fk.child for e in edges if e.mode is EdgeMode.DELETE]
        for p, edges in children.items()
        if p in actions
    }
    order, cyclic = children_first(actions, delete_children)
    # Shared (orphan) tables, and the rows they own, are emptied first: their
    # predicate reads the link rows, which must still be there.
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
    cycles = [_cycle_strategy(catalog, comp, children) for comp in cyclic]
    cycle_of = {t: c for c in cycles for t in c.tables}

    warnings = _index_warnings(catalog, anchors, children, actions)
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
        for fk in info.foreign_keys:
            if not fk.validated:
                warnings.append(f"{fk.describe()} is NOT VALID: existing rows may violate it")
        for edge in children.get(table, []):
            if edge.mode is EdgeMode.DATABASE:
                warnings.append(
                    f"{edge.fk.describe()} is ON DELETE SET DEFAULT: the database resets "
                    "those references and they are not counted"
                )

    steps = [
        Step(
            table=t,
            action=actions[t],
            predicate=_describe_predicate(t, anchors, children, orphan_links, actions),
            anchor=t in anchors or t in orphan_links,
            cycle=cycle_of[t].strategy.value if t in cycle_of else None,
        )
        for t in order
    ]
    steps += [
        Step(
            table=t,
            action=TableAction.NULLIFY,
            predicate=_describe_nullify(t, children),
            anchor=False,
        )
        for t in sorted(nullified - set(actions))
    ]
    touched = [*(t for t, a in actions.items() if a is not TableAction.KEEP), *nullified]
    for table in touched:
        if catalog.tables[table].inherited:
            raise UnsupportedTable(
                str(table),
                "other tables inherit from it (INHERITS): its statements would reach their"
                " rows too",
            )
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
    )


def _check_exact_keys(catalog: Catalog, touched: Sequence[TableName]) -> None:
    """Refuse a foreign key into a touched table whose columns compare ignoring case or
    accents (PostgreSQL ``citext``, a nondeterministic collation): the database takes
    ``'A'`` as a reference to ``'a'``, while the walk matches references to the keys
    it removed byte for byte, and would leave them behind."""
    for parent in touched:
        for fk in catalog.incoming(parent):
            loose = set(fk.parent_columns) & catalog.tables[fk.parent].inexact
            loose |= set(fk.child_columns) & catalog.tables[fk.child].inexact
            columns = catalog.tables[fk.parent].columns
            odd = [
                c for c in fk.parent_columns if not addressable(columns[c].type, catalog.dialect)
            ]
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


def _virtual_fk(catalog: Catalog, child: Sequence[str], parent: Sequence[str]) -> ForeignKey:
    def split(refs: Sequence[str]) -> tuple[TableName, tuple[str, ...]]:
        tables = {ref.rsplit(".", 1)[0] for ref in refs}
        if len(tables) != 1:
            raise UnknownTable(", ".join(refs), "a virtual foreign key (one table per side)")
        (name,) = tables
        try:
            table = catalog.resolve(name)
        except KeyError:
            raise UnknownTable(name, "a virtual foreign key") from None
        cols = tuple(ref.rsplit(".", 1)[1] for ref in refs)
        missing = [c for c in cols if c not in catalog.tables[table].columns]
        if missing:
            raise UnknownTable(f"{table}.{missing[0]}", "a virtual foreign key (column)")
        return table, cols

    child_table, child_cols = split(child)
    parent_table, parent_cols = split(parent)
    info = catalog.tables[child_table]
    return ForeignKey(
        name=f"virtual:{child_table}({','.join(child_cols)})",
        child=child_table,
        child_columns=child_cols,
        parent=parent_table,
        parent_columns=parent_cols,
        clearable=tuple(c for c in child_cols if info.columns[c].nullable),
    )


def _fk_sort_key(fk: ForeignKey) -> tuple[TableName, tuple[str, ...], TableName]:
    return (fk.child, fk.child_columns, fk.parent)


def _resolve_policies(
    catalog: Catalog, policies: Mapping[str, TablePolicy]
) -> dict[TableName, TablePolicy]:
    resolved: dict[TableName, TablePolicy] = {}
    for name, pol in policies.items():
        try:
            table = catalog.resolve(name)
        except KeyError:
            raise UnknownTable(name, "a table policy") from None
        info = catalog.tables[table]
        if pol.action is TableAction.ANONYMIZE:
            if not pol.set:
                raise PolicyConflict(str(table), "anonymize needs at least one column in 'set'")
            for col in pol.set:
                if col not in info.columns:
                    raise PolicyConflict(str(table), f"anonymize sets unknown column {col!r}")
                if pol.set[col] is None and not info.columns[col].nullable:
                    raise PolicyConflict(str(table), f"column {col!r} is NOT NULL")
        elif pol.set:
            raise PolicyConflict(str(table), "'set' is only valid with action 'anonymize'")
        if pol.action is TableAction.NULLIFY:
            raise PolicyConflict(str(table), "'nullify' is not a policy")
        resolved[table] = pol
    return resolved


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


def _check_anonymize(
    catalog: Catalog,
    actions: Mapping[TableName, TableAction],
    policies: Mapping[TableName, TablePolicy],
) -> None:
    for table, action in actions.items():
        if action is not TableAction.ANONYMIZE:
            continue
        pol = policies[table]
        for fk in catalog.tables[table].foreign_keys:
            parent_action = actions.get(fk.parent)
            if parent_action not in REMOVING or fk.on_delete in (SET_NULL, SET_DEFAULT):
                continue
            if not all(c in pol.set and pol.set[c] is None for c in fk.child_columns):
                raise PolicyConflict(
                    str(table),
                    f"anonymized rows keep referencing deleted rows through {fk.describe()}; "
                    "set those columns to null",
                )
        for fk in catalog.incoming(table):
            changed = sorted(set(fk.parent_columns) & set(pol.set))
            if changed:
                # ON UPDATE CASCADE or SET NULL would rewrite the referencing rows,
                # whoever's they are (a kept table's, another subject's); NO ACTION
                # would fail the batch. The rows that point at a key are not data to
                # anonymize by rewriting the key.
                raise PolicyConflict(
                    str(table),
                    f"anonymizing {', '.join(changed)} would change the key that"
                    f" {fk.describe()} references; anonymize other columns, or delete",
                )


def _cycle_strategy(
    catalog: Catalog, component: list[TableName], children: Mapping[TableName, list[Edge]]
) -> Cycle:
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
    dialect = catalog.dialect
    hard_path = tuple(str(t) for t in find_cycle(hard_components[0], succ_hard))
    if dialect == POSTGRESQL:
        # Deferring the deferrable references works if the others leave an order.
        immediate: dict[TableName, list[TableName]] = {}
        for fk in edges:
            if not fk.deferrable:
                immediate.setdefault(fk.parent, []).append(fk.child)
        order, still_cyclic = children_first(component, immediate)
        if not still_cyclic:
            return Cycle(tuple(component), hard_path, CycleStrategy.DEFERRED, True, tuple(order))
        strategy = CycleStrategy.WRITABLE_CTE
    elif dialect == SQLITE:
        strategy = CycleStrategy.SQLITE_DEFER
    else:
        raise UnsatisfiablePlan(
            hard_path,
            "every reference in it is NOT NULL and MySQL/MariaDB check foreign keys row by "
            "row with no way to defer them; make one of these columns nullable",
        )
    return Cycle(tuple(component), hard_path, strategy, hard=True)


def _index_warnings(
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


def _describe_predicate(
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


def _describe_nullify(table: TableName, children: Mapping[TableName, list[Edge]]) -> str:
    refs = [
        f"({', '.join(e.fk.child_columns)}) -> {e.fk.parent}: set NULL"
        for edges in children.values()
        for e in edges
        if e.fk.child == table and e.mode is EdgeMode.NULLIFY
    ]
    return "; ".join(sorted(refs))


# --- subject values ---------------------------------------------------------------


#: A whole number as a person writes it: ASCII digits only (``int()`` would also take
#: ``4_2`` and other scripts' digits, and erase subject 42 for them).
#: MySQL: text in the character set every other one converts to without loss.
_UTF8MB4 = mysql.CHAR(charset="utf8mb4")
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_BOOLEANS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}


def coerce_subject(value: object, column_type: sa.types.TypeEngine[Any], column: str) -> Any:
    """Convert a subject value (often a string from a CLI or a message) to the column's
    type; ``InvalidSubjectValue`` (which never quotes the value) when it does not fit."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes in a command line's argument
            raise InvalidSubjectValue(column, "UTF-8 text") from None
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return value
    if value is None or (isinstance(value, python_type) and not isinstance(value, bool)):
        return value
    try:
        return _convert(value, python_type)
    except (ValueError, TypeError, KeyError, OverflowError, decimal.InvalidOperation):
        raise InvalidSubjectValue(column, python_type.__name__) from None


def _convert(value: object, python_type: type) -> Any:
    if python_type is bool:
        if isinstance(value, bool):
            return value
        return _BOOLEANS[str(value).strip().lower()]
    if python_type is int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            return int(value)
        raise ValueError(value)
    if python_type is str:
        return str(value)
    if python_type is uuid.UUID:
        return uuid.UUID(str(value))
    if python_type is decimal.Decimal:
        number_ = decimal.Decimal(str(value))
        if not number_.is_finite():
            raise ValueError(value)
        return number_
    if python_type is float:
        return float(str(value))
    if python_type is bytes:
        return str(value).encode()
    if python_type in (datetime.datetime, datetime.date, datetime.time):
        if isinstance(value, str):
            return python_type.fromisoformat(value.strip())
        raise TypeError(value)
    return value


# --- predicates (SQL) ------------------------------------------------------------------

_UNROLL_FACTOR = 3
#: How far ``deep_enough`` follows a cycle's rows before it refuses.
MAX_UNROLL = 48


def _sendable(subject: object, column_type: sa.types.TypeEngine[Any], column: str) -> Any:
    """``coerce_subject``, with a value the column cannot hold as None: it matches
    nothing, as NULL does. An integer no integer column holds (SQLite's driver could
    not even send it); a text that is none of an enum's labels (PostgreSQL would refuse
    the statement: one service's enum does not fail another's erasure)."""
    value = coerce_subject(subject, column_type, column)
    if isinstance(value, int) and not _BIGINT_MIN <= value <= _BIGINT_MAX:
        return None
    if isinstance(column_type, sa.Enum) and column_type.enums and value not in column_type.enums:
        return None
    return value


def _exact_text(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """MySQL: ``value``'s text as utf8mb4 bytes, whatever its character set."""
    return sa.func.binary(sa.cast(value, _UTF8MB4))


_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


@dataclass
class Predicates:
    """Builds the SQL that selects the subject's rows of each table.

    Used for dry-run counts, pre-flight checks and the final verification; the
    executor's own batches use cheaper key lookups (see ``executor.py``).
    """

    plan: Plan
    subject: object
    #: Put the subject's value in named parameters (``bind_values`` gives them) rather
    #: than literals: for a statement built once and run for many subjects.
    parametric: bool = False
    #: A multi-table cycle's membership follows it this many times round (see
    #: ``deep_enough``); a self-referencing table's is a recursive CTE, of any depth.
    unroll: int = _UNROLL_FACTOR
    _values: dict[tuple[TableName, str], Any] = field(default_factory=dict)
    _ctes: dict[tuple[TableName, int], sa.CTE] = field(default_factory=dict)
    _cte_count: int = 0
    _params: dict[tuple[TableName, str], str] = field(default_factory=dict)

    def subject_value(self, table: TableName, column: str) -> Any:
        key = (table, column)
        if key not in self._values:
            col = self.plan.info(table).columns[column]
            self._values[key] = _sendable(self.subject, col.type, f"{table}.{column}")
        return self._values[key]

    def bind_values(self, subject: object) -> dict[str, Any]:
        """A parametric statement's parameters for ``subject``, converted per column
        (``InvalidSubjectValue`` when a column's type cannot hold it)."""
        values = {}
        for (table, column), name in self._params.items():
            col = self.plan.info(table).columns[column]
            values[name] = _sendable(subject, col.type, f"{table}.{column}")
        return values

    def _subject_param(self, table: TableName, col: str, type_: Any) -> ColumnElement[Any]:
        if not self.parametric:
            return sa.literal(self.subject_value(table, col), type_)
        name = self._params.setdefault((table, col), f"eraser_subject_{len(self._params)}")
        if isinstance(type_, sa.Integer) and not isinstance(type_, sa.Enum):
            # A parameter typed like a narrow column would fail on a wider value (a
            # subject kind held as int here and bigint elsewhere): compare as bigint.
            type_ = sa.BigInteger()
        return sa.bindparam(name, type_=type_)

    def direct(self, table: TableName, alias: sa.FromClause) -> list[ColumnElement[bool]]:
        return [self.equals(table, alias, col) for col in self.plan.anchors.get(table, ())]

    def equals(self, table: TableName, alias: sa.FromClause, col: str) -> ColumnElement[bool]:
        """``col`` holds exactly the subject's value. On MySQL/MariaDB a text column
        compares by its collation, where ``'Kunde-U'`` equals ``'kunde-ü'`` and
        ``'a '`` equals ``'a'``: the indexed comparison is kept and a binary one is
        added, so only the exact value matches."""
        column = alias.c[col]
        value = self._subject_param(table, col, column.type)
        match = column == value
        if self.plan.catalog.dialect == MYSQL and isinstance(column.type, sa.String):
            # Both sides as utf8mb4 first: a latin1 or utf16 column's bytes are not the
            # bytes of the same text sent by the client.
            stored: ColumnElement[Any] = column
            if isinstance(column.type, sa.CHAR):
                # A CHAR value has no trailing spaces, but PAD_CHAR_TO_FULL_LENGTH in
                # the session's sql_mode reads it padded to its length.
                stored = sa.func.rtrim(column)
            return sa.and_(match, _exact_text(stored) == _exact_text(value))
        if self.plan.catalog.dialect == SQLITE and isinstance(column.type, sa.String):
            # A column declared COLLATE NOCASE or RTRIM compares by it ('ACME' equals
            # 'acme'); the collation isn't reflected, so a binary comparison is added.
            return sa.and_(match, column == value.collate("BINARY"))
        if col in self.plan.catalog.tables[table].inexact:
            # PostgreSQL citext or a nondeterministic collation: 'acme' equals 'ACME'
            # there. The indexed comparison stays; a byte-wise one is added.
            exact = sa.cast(column, sa.Text()).collate("C")
            return sa.and_(match, exact == sa.cast(value, sa.Text()).collate("C"))
        if self.plan.catalog.dialect == SQLITE and isinstance(column.type, sa.types.NullType):
            # A column without a declared type keeps each value as it came: 42, '42'
            # and 42.0 are all there. Text that spells a number exactly matches the
            # number too, and a number matches its text.
            # (Numbers only: compared with a NUMERIC expression, the text ' 42' would
            # be read as a number too.)
            number = sa.cast(value, sa.Numeric())
            text = sa.cast(value, sa.Text())
            spelled = sa.cast(number, sa.Text()) == text
            numeric = sa.func.typeof(column).in_(["integer", "real"])
            return sa.or_(match, sa.and_(numeric, column == number, spelled), column == text)
        return match

    def guard(self, table: TableName, alias: sa.FromClause) -> ColumnElement[bool] | None:
        """For a table with the subject column: rows that may belong to the subject
        (its value, or NULL) — a row holding another subject's value never does."""
        conds = self._guards(table, alias)
        return sa.and_(*conds) if conds else None

    def _guards(self, table: TableName, alias: sa.FromClause) -> list[ColumnElement[bool]]:
        return [
            sa.or_(alias.c[c].is_(None), self.equals(table, alias, c))
            for c in self.plan.anchors.get(table, ())
        ]

    def member(
        self, table: TableName, alias: sa.FromClause | None = None, depth: int = 0
    ) -> ColumnElement[bool]:
        """Rows of ``table`` (through ``alias``) that belong to the subject.

        Each referenced table's subject rows are a named CTE at the top of the
        statement, so a 20-level chain is 20 flat CTEs rather than 20 nested
        subqueries (SQLite's parser stops at about a dozen), and a table reached by
        several paths is computed once.
        """
        target = alias if alias is not None else self.plan.info(table).table
        if self._is_tree(table):
            cte = self.member_cte(table, depth)
            cols = self._tree_identity(table)
            return key_in_select([target.c[c] for c in cols], sa.select(*[cte.c[c] for c in cols]))
        return self._member_plain(table, target, depth)

    def member_cte(self, table: TableName, depth: int = 0) -> sa.CTE:
        """The subject's rows of ``table`` as a CTE with the columns children reference."""
        key = (table, depth)
        if key in self._ctes:
            return self._ctes[key]
        info = self.plan.info(table)
        cols = self._cte_columns(table)
        alias = info.table.alias()
        self._cte_count += 1
        name = f"subject_rows_{self._cte_count}"
        if self._is_tree(table):
            cte = self._tree_cte(table, cols, name, depth)
        else:
            sel = sa.select(*[alias.c[c] for c in cols]).where(
                self._member_plain(table, alias, depth)
            )
            cte = sel.cte(name)
        self._ctes[key] = cte
        return cte

    def _is_tree(self, table: TableName) -> bool:
        cycle = self.plan.cycle_of.get(table)
        return cycle is not None and len(cycle.tables) == 1

    def _tree_identity(self, table: TableName) -> list[str]:
        info = self.plan.info(table)
        return list(info.key_columns() or self._cte_columns(table))

    def _cte_columns(self, table: TableName) -> list[str]:
        info = self.plan.info(table)
        cols = list(info.key_columns() or ())
        for fk in self.plan.catalog.incoming(table):
            cols += fk.parent_columns
        return list(dict.fromkeys(cols))

    def _via_edges(self, table: TableName) -> list[ForeignKey]:
        # A link row pointing at a shared (orphan) row is the subject's through its own
        # path already; the edge only orders the removal.
        return [
            e.fk
            for parent in sorted(self.plan.actions)
            for e in self.plan.children.get(parent, [])
            if e.fk.child == table
            and e.mode is EdgeMode.DELETE
            and e.fk not in self.plan.orphan_links.get(parent, ())
        ]

    def _member_plain(
        self, table: TableName, target: sa.FromClause, depth: int, skip_self: bool = False
    ) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = list(self.direct(table, target))
        via: list[ColumnElement[bool]] = []
        cycle = self.plan.cycle_of.get(table)
        limit = self.unroll * len(cycle.tables) if cycle else 0
        for fk in self._via_edges(table):
            if skip_self and fk.is_self_reference:
                continue
            in_cycle = cycle is not None and fk.parent in cycle.tables
            if in_cycle and depth >= limit:
                continue
            parent = self.member_cte(fk.parent, depth + 1 if in_cycle else depth)
            sub = sa.select(*[parent.c[c] for c in fk.parent_columns])
            via.append(key_in_select([target.c[c] for c in fk.child_columns], sub))
        if via:
            via_pred = sa.or_(*via)
            guard = self.guard(table, target)
            parts.append(sa.and_(via_pred, guard) if guard is not None else via_pred)
        if table in self.plan.orphan_links:
            parts.append(self.orphan(table, target))
        return sa.or_(*parts) if parts else sa.false()

    def _tree_cte(self, table: TableName, cols: list[str], name: str, depth: int) -> sa.CTE:
        info = self.plan.info(table)
        self_fks = [fk for fk in self._via_edges(table) if fk.is_self_reference]
        for fk in self_fks:
            cols = list(dict.fromkeys([*cols, *fk.parent_columns]))
        base_alias = info.table.alias()
        base = sa.select(*[base_alias.c[c] for c in cols]).where(
            self._member_plain(table, base_alias, depth, skip_self=True)
        )
        cte = base.cte(name, recursive=True)
        # One recursive term joining through any of the self-references: PostgreSQL
        # takes one reference to the CTE in the recursive part, and ``UNION`` of several
        # terms would nest the first of them in the non-recursive part.
        step = info.table.alias()
        conds = [
            sa.and_(
                *[
                    step.c[c] == cte.c[p]
                    for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
                ]
            )
            for fk in self_fks
        ]
        sel = sa.select(*[step.c[c] for c in cols]).join_from(step, cte, sa.or_(*conds))
        return cte.union(sel.where(sa.and_(sa.true(), *self._guards(table, step))))

    def orphan(self, table: TableName, target: sa.FromClause) -> ColumnElement[bool]:
        """Shared rows linked by the subject and referenced by no other row."""
        linked: list[ColumnElement[bool]] = []
        for fk in self.plan.orphan_links[table]:
            link = self.plan.info(fk.child).table.alias()
            sub = sa.select(*[link.c[c] for c in fk.child_columns]).where(
                self.member(fk.child, link)
            )
            linked.append(key_in_select([target.c[c] for c in fk.parent_columns], sub))
        others: list[ColumnElement[bool]] = []
        links = self.plan.orphan_links[table]
        for fk in self.plan.catalog.incoming(table):
            owned = fk.child in self.plan.actions and fk.child not in self.plan.orphan_links
            if fk not in links and owned:
                continue  # rows owned by the shared row: they go with it
            # (A shared row that another shared row references, a parent tag say, is
            # not orphaned: the other may be another subject's.)
            ref = self.plan.info(fk.child).table.alias()
            join = sa.and_(
                *[
                    ref.c[c] == target.c[p]
                    for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
                ]
            )
            cond: ColumnElement[bool] = join
            if fk in links:
                cond = sa.and_(join, is_not(self.member(fk.child, ref)))
            others.append(sa.exists(sa.select(sa.literal(1)).select_from(ref).where(cond)))
        return sa.and_(sa.or_(*linked), sa.not_(sa.or_(*others)) if others else sa.true())

    def anonymized(self, table: TableName, target: sa.FromClause) -> ColumnElement[bool]:
        """Rows whose anonymized columns already hold the policy's values."""
        pol = self.plan.policies[table]
        return sa.and_(
            *[
                target.c[col].is_not_distinct_from(_literal(val, target.c[col].type))
                for col, val in pol.set.items()
            ]
        )

    def remaining(self, table: TableName) -> ColumnElement[bool]:
        """What must be gone (or anonymized) after the erasure, for verification."""
        target = self.plan.info(table).table
        pred = self.member(table, target)
        if self.plan.actions[table] is TableAction.ANONYMIZE:
            return sa.and_(pred, sa.not_(self.anonymized(table, target)))
        return pred

    def nullify_targets(self, table: TableName) -> list[ColumnElement[bool]]:
        """For each SET NULL reference of ``table`` into rows that will be removed: the
        rows (not themselves erased) whose reference will be cleared. One predicate per
        reference: a row with two such references counts twice, as the erasure does."""
        target = self.plan.info(table).table
        erased = self.plan.actions.get(table) in REMOVING
        preds = []
        for parent in sorted(self.plan.actions):
            if self.plan.actions[parent] not in REMOVING:
                continue
            for edge in self.plan.children.get(parent, []):
                if edge.fk.child != table or edge.mode is not EdgeMode.NULLIFY:
                    continue
                fk = edge.fk
                members = self.member_cte(parent)
                sub = sa.select(*[members.c[c] for c in fk.parent_columns])
                pred = key_in_select([target.c[c] for c in fk.child_columns], sub)
                if erased:
                    pred = sa.and_(pred, is_not(self.member(table, target)))
                preds.append(pred)
        return preds


def is_not(pred: ColumnElement[bool]) -> ColumnElement[bool]:
    """``NOT pred`` that is true where ``pred`` is NULL (a NULL subject column makes a
    plain NOT unknown, and the row would silently drop out)."""
    return sa.case((pred, sa.false()), else_=sa.true())


def _literal(value: ScalarValue, type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any]:
    if value is None:
        return sa.null()
    return sa.literal(value, type_)


def key_in_select(
    columns: Sequence[ColumnElement[Any]], select: sa.Select[Any]
) -> ColumnElement[bool]:
    """``columns IN (select)``, as a row value when the key has several columns."""
    if len(columns) == 1:
        return columns[0].in_(select)
    return sa.tuple_(*columns).in_(select)
