"""How the engine names one row of a table: its key, or the database's row address."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from worker.dialects.postgresql_arrays import Tid, ctid, pg_array

RowKind = Literal["key", "ctid", "rowid", "none"]


class KeyReader(Protocol):
    """What a row identity asks of its database (``worker.dialects.base.Dialect``
    provides it): keys read and compared as the driver gives them."""

    def driver_value(self, column: ColumnElement[Any]) -> ColumnElement[Any]: ...

    def key_in(
        self, columns: Sequence[ColumnElement[Any]], values: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]: ...


@dataclass(frozen=True)
class RowIdentity:
    """How the engine names one row of a table: its key, or the database's row address
    (``ctid`` on PostgreSQL, ``rowid`` on SQLite) for tables without one. On MySQL a
    table without any key is deleted with ``DELETE ... LIMIT`` (``kind == "none"``).

    Keys are read and sent back as the driver gives them (``Dialect.driver_value``)."""

    kind: RowKind
    #: The database, for keys read and sent back as the driver gives them.
    dialect: KeyReader
    columns: tuple[str, ...] = ()
    #: SQLite: the name the row id goes by in this table.
    alias: str = "rowid"

    def _rowid(self) -> ColumnElement[Any]:
        return sa.literal_column(self.alias)

    def _keys(self, table: sa.FromClause) -> list[ColumnElement[Any]]:
        return [self.dialect.driver_value(table.c[c]) for c in self.columns]

    def select_columns(self, table: sa.FromClause) -> list[ColumnElement[Any]]:
        if self.kind == "key":
            return self._keys(table)
        if self.kind == "ctid":
            return [sa.cast(ctid(), sa.Text)]
        if self.kind == "rowid":
            return [self._rowid()]
        return []

    def sort_key(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        """Order keys as the database does (a ``ctid`` comes back as text '(page,item)')."""
        if self.kind == "ctid":
            page, _, item = str(value[0]).strip("()").partition(",")
            return (int(page), int(item))
        return value

    def order_by(self, table: sa.FromClause) -> list[ColumnElement[Any]]:
        if self.kind == "key":
            return [table.c[c] for c in self.columns]
        if self.kind == "ctid":
            return [ctid()]
        if self.kind == "rowid":
            return [self._rowid()]
        return []

    def after(self, table: sa.FromClause, last: tuple[Any, ...]) -> ColumnElement[bool]:
        """Rows after ``last`` in key order (keyset pagination)."""
        if self.kind == "key":
            cols = self._keys(table)
            if len(cols) == 1:
                return cols[0] > sa.literal(last[0], cols[0].type)
            return sa.tuple_(*cols) > sa.tuple_(
                *[sa.literal(v, c.type) for v, c in zip(last, cols, strict=True)]
            )
        if self.kind == "ctid":
            return ctid() > sa.cast(sa.literal(last[0], sa.Text), Tid())
        return self._rowid() > sa.literal(last[0])

    def matches(
        self, table: sa.FromClause, values: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]:
        """Rows whose identity is one of ``values``."""
        if self.kind == "key":
            return self.dialect.key_in([table.c[c] for c in self.columns], values)
        if self.kind == "ctid":
            return ctid() == sa.any_(pg_array([v[0] for v in values], Tid()))
        return self._rowid().in_([v[0] for v in values])
