"""The interface of a database's way to remove a subject's partition whole
(``worker.execution.partitions``), and what its backends share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import ForeignKey, TableInfo


@dataclass(frozen=True)
class Partition:
    """The subject's partition of a table: where it is, and a ``Table`` to query it by
    (the partitioned table's columns under the partition's name)."""

    schema: str
    name: str
    table: sa.Table
    #: PostgreSQL: the partition's oid (checked again under the lock).
    oid: int = 0
    #: MySQL: ``PARTITION (p)``, after the partitioned table's name (``table``).
    hint: str = ""

    def select(self, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
        """``SELECT columns FROM`` the partition (only)."""
        query = sa.select(*columns).select_from(self.table)
        return query.with_hint(self.table, self.hint) if self.hint else query


class NotProven(Exception):
    """The partition may not go whole after all: its rows go row by row."""


class PartitionBackend:
    """One database's way to find, lock and remove a subject's partition."""

    #: Whether removing a partition commits by itself (MySQL's DDL), apart from the
    #: transaction that writes the batch's ledger row.
    ddl_commits: bool = False

    def __init__(self, lock_timeout_ms: int) -> None:
        self.lock_timeout_ms = lock_timeout_ms

    def find(
        self, conn: Connection, info: TableInfo, column: str, where: ColumnElement[bool]
    ) -> Partition | None:
        """The partition bound to exactly the subject's value that holds the rows
        matching ``where``, or None."""
        raise NotImplementedError

    def refused(self, mode: str, info: TableInfo, incoming: list[ForeignKey]) -> bool:
        """Whether ``mode`` cannot be had for this table at all."""
        return False

    def remove(
        self,
        conn: Connection,
        info: TableInfo,
        part: Partition,
        prove: Prover,
        mode: str,
        referencing: list[sa.Table],
    ) -> int:
        """Lock the partition (and the ``referencing`` tables, where the database
        needs it), run ``prove`` (rows it held, or ``NotProven``), then truncate or
        drop it. Returns the rows removed."""
        raise NotImplementedError


Prover = Callable[[Connection, Partition], int]


def partition_table(info: TableInfo, schema: str, name: str) -> sa.Table:
    """The partitioned table's columns under a partition's name."""
    columns = [sa.Column(c.name, c.type) for c in info.columns.values()]
    return sa.Table(name, sa.MetaData(), *columns, schema=schema)
