"""The erasure plan: what each table's rows become, in which order, through which
references, and how each foreign-key cycle is broken."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from models.erasure import TableAction, TablePolicy
from worker.catalog.model import Catalog, ForeignKey, TableInfo, TableName
from worker.dialects import dialect_named
from worker.dialects.base import Dialect

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
    #: The referencing table's policy is ``reassign``: the reference is moved to the
    #: policy's placeholder row, explicitly, in batches.
    REASSIGN = "reassign"


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
    #: Tables (policy ``reassign``) whose references into removed rows are moved to a
    #: placeholder row.
    reassigned: list[TableName] = field(default_factory=list)

    def placeholder(self, table: TableName) -> Any:
        """The placeholder key a ``reassign`` table's references move to."""
        return self.policies[table].reassign_to

    @property
    def fingerprint(self) -> str:
        return self.catalog.fingerprint

    @property
    def dialect(self) -> Dialect:
        """The database the plan was made for."""
        return dialect_named(self.catalog.dialect)

    def info(self, table: TableName) -> TableInfo:
        return self.catalog.tables[table]

    @cached_property
    def verifiable_by_own_column(self) -> frozenset[TableName]:
        """Tables whose remaining subject rows, if any, must hold the subject's value in
        their own subject column(s) once the erasure has run: the largest set of removed
        tables into which membership only comes from tables of the set. Their
        verification is an index look-up (proof: docs/design/engine-notes.md,
        "Verification by own column")."""
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
