"""PostgreSQL: find the subject's list partition and truncate, or detach and drop, it.

The partition is the direct partition of the table that holds the subject's rows
(``tableoid`` of one of them, up through ``pg_partition_ancestors``: a partition that
is itself partitioned goes whole, its sub-partitions with it). Its bound must be a
LIST bound of exactly one value, not ``DEFAULT``; its subject rows then hold that
value, so the bound is the subject's.

Locks, in one transaction with the erasure's lock timeout:

- ``truncate``: ``ACCESS EXCLUSIVE`` on the partition only. Writers whose statements
  the planner prunes to other partitions go on; a statement over every partition waits
  for the count and the truncation. ``TRUNCATE`` is refused on a table a declared
  foreign key references, so such tables go row by row in this mode.
- ``drop``: the same lock on the partition for the count and the checks, then
  ``ACCESS EXCLUSIVE`` on the partitioned table (``ONLY``) for ``DETACH PARTITION``
  (which, where foreign keys reference the table, checks the partition's keys against
  them again itself) and ``DROP TABLE``: every writer of the table waits for those.
  A writer of the subject's partition holding the partitioned table's lock meanwhile
  makes a deadlock the server breaks by failing one side; if it is the erasure's, the
  rows go row by row. ``DETACH ... CONCURRENTLY`` would take a weaker lock, but cannot
  run in a transaction: the count and the drop would be apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import ForeignKey, TableInfo
from worker.execution.partition_backend import (
    NotProven,
    Partition,
    PartitionBackend,
    Prover,
    partition_table,
)

#: The direct partition of ``schema.table`` among a leaf's ancestors, with its bound
#: and the table's partitioning.
_DIRECT_PARTITION = """
SELECT c.oid, n.nspname, c.relname, c.relpartbound::text, p.partstrat, p.partnatts,
       p.partexprs IS NULL, a.attname
FROM pg_partition_ancestors(:leaf) AS anc(relid)
JOIN pg_inherits i ON i.inhrelid = anc.relid
JOIN pg_class c ON c.oid = anc.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = i.inhparent
JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_partitioned_table p ON p.partrelid = r.oid
LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = p.partattrs[0]
WHERE rn.nspname = :schema AND r.relname = :table
"""

#: Triggers on a DELETE anywhere in the partition's tree (a TRUNCATE or DROP would
#: skip them).
_DELETE_TRIGGERS = """
SELECT count(*) FROM pg_trigger t
WHERE NOT t.tgisinternal AND t.tgtype & 8 <> 0
  AND t.tgrelid IN (SELECT relid FROM pg_partition_tree(:oid))
"""


class PostgresPartitions(PartitionBackend):
    def refused(self, mode: str, info: TableInfo, incoming: list[ForeignKey]) -> bool:
        declared = [fk for fk in incoming if not (fk.name or "").startswith("virtual:")]
        return mode == "truncate" and bool(declared)

    def find(
        self, conn: Connection, info: TableInfo, column: str, where: ColumnElement[bool]
    ) -> Partition | None:
        if (conn.dialect.server_version_info or (0,)) < (12,):
            return None  # no pg_partition_ancestors before PostgreSQL 12
        leaf = conn.execute(
            sa.select(sa.literal_column("tableoid")).select_from(info.table).where(where).limit(1)
        ).scalar()
        if leaf is None:
            return None
        params = {"leaf": leaf, "schema": info.name.schema, "table": info.name.name}
        row = conn.execute(sa.text(_DIRECT_PARTITION), params).first()
        if row is None:
            return None
        oid, schema, name, bound, strategy, keys, plain, key_column = row
        if strategy != "l" or keys != 1 or not plain or key_column != column:
            return None
        if not _single_value(str(bound)):
            return None
        if conn.execute(sa.text(_DELETE_TRIGGERS), {"oid": oid}).scalar():
            return None
        return Partition(schema, name, partition_table(info, schema, name), oid=int(oid))

    def remove(
        self,
        conn: Connection,
        info: TableInfo,
        part: Partition,
        prove: Prover,
        mode: str,
        referencing: list[sa.Table],
    ) -> int:
        quote = conn.dialect.identifier_preparer.format_table
        parent, target = quote(info.table), quote(part.table)
        conn.exec_driver_sql(f"LOCK TABLE {target} IN ACCESS EXCLUSIVE MODE")
        # Still the same partition of the same table, now that it is locked.
        params = {"leaf": part.oid, "schema": info.name.schema, "table": info.name.name}
        row = conn.execute(sa.text(_DIRECT_PARTITION), params).first()
        if row is None or row[0] != part.oid or not _single_value(str(row[3])):
            raise NotProven
        rows = prove(conn, part)
        if mode == "drop":
            # The partitioned table only now, for the DDL: its writers wait for the
            # detach and the drop, not for the count.
            conn.exec_driver_sql(f"LOCK TABLE ONLY {parent} IN ACCESS EXCLUSIVE MODE")
            conn.exec_driver_sql(f"ALTER TABLE {parent} DETACH PARTITION {target}")
            conn.exec_driver_sql(f"DROP TABLE {target}")
        else:
            conn.exec_driver_sql(f"TRUNCATE {target}")
        return rows


def _single_value(bound: str) -> bool:
    """A LIST bound of exactly one value (``relpartbound`` as its node tree: one
    ``CONST`` in ``listdatums``), not ``DEFAULT``."""
    return (
        ":strategy l " in bound
        and ":is_default false " in bound
        and bound.count("{CONST ") == 1
        and ":constisnull false " in bound
    )
