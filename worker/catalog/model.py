"""The reflected schema of one database: tables, keys, foreign keys, indexes, triggers.

Every SQL statement the engine runs is built from the ``sqlalchemy.Table`` objects
held here, so names such as ``"Order"`` or ``"order line"`` are always quoted by
SQLAlchemy, never by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from worker.catalog.partitions import PartitionScheme

#: ``ON DELETE`` rules, spelled as the SQL standard does.
NO_ACTION = "NO ACTION"
RESTRICT = "RESTRICT"
CASCADE = "CASCADE"
SET_NULL = "SET NULL"
SET_DEFAULT = "SET DEFAULT"


@dataclass(frozen=True, order=True)
class TableName:
    """A schema-qualified table name; prints as ``schema.name``."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    name: str
    type: sa.types.TypeEngine[Any]
    nullable: bool


@dataclass(frozen=True)
class ForeignKey:
    """One foreign-key constraint, from the referencing (child) to the referenced table."""

    name: str | None
    child: TableName
    child_columns: tuple[str, ...]
    parent: TableName
    parent_columns: tuple[str, ...]
    on_delete: str = NO_ACTION
    deferrable: bool = False
    initially_deferred: bool = False
    validated: bool = True
    #: The referencing columns that accept NULL. Setting them to NULL clears the
    #: reference (a key with any NULL column references nothing: MATCH SIMPLE).
    clearable: tuple[str, ...] = ()

    @property
    def nullable(self) -> bool:
        """Whether the reference can be cleared by setting columns to NULL."""
        return bool(self.clearable)

    @property
    def is_self_reference(self) -> bool:
        return self.child == self.parent

    def describe(self) -> str:
        cols = ", ".join(self.child_columns)
        pcols = ", ".join(self.parent_columns)
        label = f"{self.name} " if self.name else ""
        return f"{label}{self.child}({cols}) -> {self.parent}({pcols})"


@dataclass(frozen=True)
class Index:
    name: str | None
    columns: tuple[str, ...]
    unique: bool


@dataclass(frozen=True)
class Trigger:
    name: str
    timing: str
    events: tuple[str, ...]


@dataclass
class TableInfo:
    """One reflected table and the SQLAlchemy ``Table`` that SQL is built from."""

    name: TableName
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    unique_keys: tuple[tuple[str, ...], ...]
    indexes: tuple[Index, ...]
    foreign_keys: tuple[ForeignKey, ...]
    table: sa.Table = field(repr=False, compare=False)
    triggers: tuple[Trigger, ...] = ()
    partitioned: bool = False
    #: How a partitioned table is partitioned (PostgreSQL, MySQL/MariaDB). Not part of
    #: the fingerprint: the erasure checks a partition's bounds live before using it.
    partition_scheme: PartitionScheme | None = None
    #: MariaDB ``WITH SYSTEM VERSIONING``: old versions of rows stay in its history.
    system_versioned: bool = False
    #: PostgreSQL: other tables inherit from it (``INHERITS``, not partitions).
    inherited: bool = False
    #: PostgreSQL: columns whose equality is not byte equality (``citext``, or a
    #: nondeterministic collation): ``'a'`` equals ``'A'`` there.
    inexact: frozenset[str] = frozenset()
    #: PostgreSQL: rules (``CREATE RULE``) on its DELETE or UPDATE.
    rules: tuple[str, ...] = ()
    #: MySQL: columns every UPDATE sets to the current time unless it assigns them
    #: (``ON UPDATE CURRENT_TIMESTAMP``).
    stamped: tuple[str, ...] = ()

    def cleared(self, columns: Sequence[str]) -> dict[str, Any]:
        """An UPDATE's values that set ``columns`` to NULL and leave every stamped
        column as it was (assigned to itself): clearing a reference is what the
        database's own ``ON DELETE SET NULL`` would do, which stamps nothing."""
        values: dict[str, Any] = dict.fromkeys(columns)
        for name in self.stamped:
            if name not in values:
                values[name] = self.table.c[name]
        return values

    def key_columns(self) -> tuple[str, ...] | None:
        """Columns that identify one row: the primary key, else a NOT NULL unique key."""
        if self.primary_key:
            return self.primary_key
        for cols in self.unique_keys:
            if all(not self.columns[c].nullable for c in cols):
                return cols
        return None

    def has_index_on(self, columns: Sequence[str]) -> bool:
        """Whether some index (or key) starts with exactly these columns, in any order."""
        wanted = set(columns)
        candidates: list[tuple[str, ...]] = [self.primary_key, *self.unique_keys]
        candidates += [ix.columns for ix in self.indexes]
        return any(len(c) >= len(wanted) and set(c[: len(wanted)]) == wanted for c in candidates)

    @property
    def delete_triggers(self) -> tuple[Trigger, ...]:
        return tuple(t for t in self.triggers if "DELETE" in t.events)


@dataclass
class Catalog:
    """The reflected tables of one database, with their foreign-key graph."""

    dialect: str
    default_schema: str
    tables: dict[TableName, TableInfo]
    #: ``worker.catalog.fingerprint.fingerprint`` of ``tables``, as reflected.
    fingerprint: str
    _incoming: dict[TableName, list[ForeignKey]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._incoming = {name: [] for name in self.tables}
        for info in self.tables.values():
            for fk in info.foreign_keys:
                if fk.parent in self._incoming:
                    self._incoming[fk.parent].append(fk)

    def incoming(self, parent: TableName) -> list[ForeignKey]:
        """Foreign keys that reference ``parent`` (its child edges)."""
        return self._incoming.get(parent, [])

    def with_foreign_keys(self, extra: Sequence[ForeignKey]) -> Catalog:
        """This catalog plus references the database does not declare (virtual foreign
        keys from the registry). The fingerprint stays the database's own."""
        if not extra:
            return self
        tables = dict(self.tables)
        for fk in extra:
            info = tables[fk.child]
            tables[fk.child] = replace(info, foreign_keys=(*info.foreign_keys, fk))
        return Catalog(self.dialect, self.default_schema, tables, self.fingerprint)

    def resolve(self, name: str) -> TableName:
        """Find a table by ``name`` or ``schema.name``; raises ``KeyError`` if unknown."""
        if "." in name:
            schema, _, bare = name.partition(".")
            candidate = TableName(schema, bare)
            if candidate in self.tables:
                return candidate
        matches = [t for t in self.tables if t.name == name]
        if len(matches) == 1:
            return matches[0]
        preferred = TableName(self.default_schema, name)
        if preferred in self.tables:
            return preferred
        raise KeyError(name)
