"""MySQL/MariaDB: find the subject's list partition and truncate or drop it.

The partition is the one the server routes the subject's value to (``EXPLAIN``'s
``partitions``: exactly one, no sub-partitions); its bound (``PARTITION_DESCRIPTION``)
must be a single value, not ``DEFAULT``.

DDL commits by itself on MySQL, so the count and the removal cannot share a
transaction. They share a table lock instead: ``LOCK TABLES t WRITE`` (and ``READ``
on every table that references it, for the reference checks), then the count, the
checks and ``ALTER TABLE t TRUNCATE PARTITION p`` (or ``DROP PARTITION p``), then
``UNLOCK TABLES``. Every reader and writer of the table waits for that long; the
wait for the lock itself is bounded by the erasure's lock timeout
(``lock_wait_timeout``). Partitioned InnoDB tables cannot hold foreign keys, so only
virtual ones (the registry's) reference them.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import TableInfo
from worker.catalog.partitions import split_top_level
from worker.execution.partition_backend import NotProven, Partition, PartitionBackend, Prover

_BOUND = (
    "SELECT PARTITION_METHOD, PARTITION_DESCRIPTION, SUBPARTITION_NAME"
    " FROM information_schema.PARTITIONS"
    " WHERE TABLE_SCHEMA = :schema AND TABLE_NAME = :table AND PARTITION_NAME = :partition"
)


class MySQLPartitions(PartitionBackend):
    ddl_commits = True

    def find(
        self, conn: Connection, info: TableInfo, column: str, where: ColumnElement[bool]
    ) -> Partition | None:
        query = sa.select(sa.literal(1)).select_from(info.table).where(where)
        compiled = query.compile(dialect=conn.dialect)
        explain = "EXPLAIN PARTITIONS " if conn.dialect.is_mariadb else "EXPLAIN "  # type: ignore[attr-defined]
        plan = conn.exec_driver_sql(explain + str(compiled), compiled.params).mappings().first()
        names = str(plan.get("partitions") or "" if plan is not None else "").split(",")
        if len(names) != 1 or not names[0]:
            return None
        params = {"schema": info.name.schema, "table": info.name.name, "partition": names[0]}
        rows = conn.execute(sa.text(_BOUND), params).all()
        if len(rows) != 1 or not _single_value(rows[0]):
            return None
        quote = conn.dialect.identifier_preparer.quote
        return Partition(
            info.name.schema, names[0], info.table, hint=f"PARTITION ({quote(names[0])})"
        )

    def remove(
        self,
        conn: Connection,
        info: TableInfo,
        part: Partition,
        prove: Prover,
        mode: str,
        referencing: list[sa.Table],
    ) -> int:
        prep = conn.dialect.identifier_preparer
        table = prep.format_table(info.table)
        others = sorted({prep.format_table(t) for t in referencing} - {table})
        seconds = max(1, math.ceil(self.lock_timeout_ms / 1000))
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {seconds}")
        try:
            locks = ", ".join([f"{table} WRITE", *(f"{t} READ" for t in others)])
            conn.exec_driver_sql(f"LOCK TABLES {locks}")
            try:
                rows = conn.execute(sa.text(_BOUND), _bound_params(info, part)).all()
                if len(rows) != 1 or not _single_value(rows[0]):
                    raise NotProven
                count = prove(conn, part)
                verb = "DROP" if mode == "drop" else "TRUNCATE"
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} {verb} PARTITION {prep.quote(part.name)}"
                )
            finally:
                conn.exec_driver_sql("UNLOCK TABLES")
        finally:
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
        return count


def _bound_params(info: TableInfo, part: Partition) -> dict[str, str]:
    return {"schema": info.name.schema, "table": info.name.name, "partition": part.name}


def _single_value(row: Any) -> bool:
    """A LIST partition without sub-partitions, bound to one value (not DEFAULT)."""
    method, description, subpartition = row
    if subpartition is not None or not str(method or "").upper().startswith("LIST"):
        return False
    text = str(description or "").strip()
    if text.upper() in ("DEFAULT", "MAXVALUE", "NULL", ""):
        return False
    return len(split_top_level(text)) == 1
