"""Remove a subject's whole partition at once instead of row by row.

For a table partitioned by LIST on its subject column (``worker.planning.partitions``)
whose subject has a partition of its own, bound to exactly the subject's value:

1. the rows referencing the partition's rows are removed first, by the ordinary walk,
   children first, exactly as a batch of the partition's rows would take them (the
   pre-flight checks have already refused another subject's reference);
2. one transaction locks the partition, counts its rows, proves that every one of them
   holds the subject's value and that nothing references them any more, and
   truncates the partition (``truncate``, the default: it stays, empty, for the
   tenant's next rows) or detaches and drops it (``drop``).

Whatever cannot be proved (a lock not had in time, a row another subject holds, a
reference a writer added) leaves the partition to the row walk that follows, which
also takes any of the subject's rows left elsewhere. Partition names are never
reported: they often spell the tenant.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction
from worker.catalog.model import ForeignKey, TableName
from worker.execution.context import WalkContext
from worker.execution.partition_backend import NotProven, Partition, PartitionBackend, Prover
from worker.execution.partitions_mysql import MySQLPartitions
from worker.execution.partitions_postgresql import PostgresPartitions
from worker.execution.transactions import Transactions
from worker.faults import classify
from worker.planning.model import Plan
from worker.planning.partitions import partition_tables
from worker.planning.predicates import Predicates, key_in_select


def backend_for(dialect: str, lock_timeout_ms: int) -> PartitionBackend | None:
    """The database's backend; None where partitions are not removed whole (SQLite)."""
    if dialect == "postgresql":
        return PostgresPartitions(lock_timeout_ms)
    if dialect == "mysql":
        return MySQLPartitions(lock_timeout_ms)
    return None


class PartitionErasure:
    """Called by the walk before an anchor table's row walk."""

    def __init__(
        self,
        ctx: WalkContext,
        tx: Transactions,
        walk: Callable[[TableName, ColumnElement[bool]], None],
    ) -> None:
        self.ctx = ctx
        self.tx = tx
        self.walk = walk
        self.backend = backend_for(ctx.plan.catalog.dialect, ctx.opts.lock_timeout_ms)
        if self.backend is not None and self.backend.ddl_commits and ctx.opts.ledger is not None:
            # A task keeps its counts exact with a ledger row committed with each
            # batch; MySQL's DDL commits on its own, so a crash between it and its
            # ledger row would lose the partition's count. Under a task, its rows go
            # in batches (docs/engine.md, "Partitions").
            self.backend = None
        self.tables = partition_tables(ctx.plan) if ctx.opts.partitions != "rows" else {}
        #: ``schema.table (mode)`` for every table whose subject partition went whole.
        self.removed: list[str] = []
        #: Why a partition that looked removable went in batches after all (warnings).
        self.notes: list[str] = []

    def erase(self, table: TableName) -> None:
        """Remove ``table``'s subject partition whole where it may be; the row walk that
        follows takes whatever is left."""
        if self.backend is None or table not in self.tables:
            return
        plan, mode = self.ctx.plan, self.ctx.opts.partitions
        info = plan.info(table)
        if self.backend.refused(mode, info, plan.catalog.incoming(table)):
            return
        with self.ctx.conn.begin():
            part = self.backend.find(self.ctx.conn, info, self.tables[table], self._where(table))
        if part is None:
            return
        for edge in plan.children.get(table, []):
            self.walk(edge.fk.child, _references(plan, self.ctx.preds, edge.fk))
        try:
            with self.tx.transaction() as conn:
                referencing = [plan.info(fk.child).table for fk in plan.catalog.incoming(table)]
                rows = self.backend.remove(conn, info, part, self._prover(table), mode, referencing)
                self.tx.pending[(table, TableAction.DELETE)] = rows
        except NotProven:
            self.notes.append(
                f"{table}: its partition holds rows that could not be proved"
                " the subject's alone; they went in batches"
            )
            return
        except sa.exc.DBAPIError as exc:
            # A lock not had in time, a deadlock, a privilege the role lacks: nothing was
            # changed (the transaction rolled back, or the DDL failed), and the batches
            # can still do it.
            if exc.connection_invalidated:
                raise
            self.notes.append(
                f"{table}: its partition could not be removed whole"
                f" ({classify(exc).code}); its rows went in batches"
            )
            return
        self.removed.append(f"{table} ({mode})")

    def _where(self, table: TableName) -> ColumnElement[bool]:
        return sa.or_(*self.ctx.preds.direct(table, self.ctx.table(table)))

    def _prover(self, table: TableName) -> Prover:
        plan, preds = self.ctx.plan, self.ctx.preds

        def prove(conn: Connection, part: Partition) -> int:
            return prove_partition(conn, plan, preds, table, part)

        return prove


def prove_partition(
    conn: Connection, plan: Plan, preds: Predicates, table: TableName, part: Partition
) -> int:
    """The partition's row count, once every row is proved the subject's and nothing
    references any of them; ``NotProven`` otherwise."""
    total, matching = _counts(conn, preds, table, part)
    if total != matching:
        raise NotProven
    for fk in plan.catalog.incoming(table):
        child = plan.info(fk.child).table
        inner = part.select(*[part.table.c[c] for c in fk.parent_columns])
        refs = key_in_select([child.c[c] for c in fk.child_columns], inner)
        if conn.execute(sa.select(sa.literal(1)).select_from(child).where(refs).limit(1)).first():
            raise NotProven
    return int(total)


def predicted(conn: Connection, plan: Plan, preds: Predicates, mode: str) -> list[str]:
    """For a dry run: the tables whose subject partition an erasure would remove whole
    (proved as far as a read can: every row of it the subject's)."""
    backend = backend_for(plan.catalog.dialect, 0)
    if backend is None or mode == "rows":
        return []
    found = []
    for table, column in partition_tables(plan).items():
        info = plan.info(table)
        if backend.refused(mode, info, plan.catalog.incoming(table)):
            continue
        part = backend.find(conn, info, column, sa.or_(*preds.direct(table, info.table)))
        if part is None:
            continue
        total, matching = _counts(conn, preds, table, part)
        if total == matching:
            found.append(f"{table} ({mode})")
    return found


def _counts(
    conn: Connection, preds: Predicates, table: TableName, part: Partition
) -> tuple[int, int]:
    """The partition's rows, and those of them that hold the subject's value."""
    mine = sa.or_(*preds.direct(table, part.table))
    matching = sa.func.coalesce(sa.func.sum(sa.case((mine, 1), else_=0)), 0)
    row = conn.execute(part.select(sa.func.count(), matching)).one()
    return int(row[0]), int(row[1])


def _references(plan: Plan, preds: Predicates, fk: ForeignKey) -> ColumnElement[bool]:
    """Rows of ``fk``'s child referencing the subject's rows of its parent."""
    parent = plan.info(fk.parent).table
    child = plan.info(fk.child).table
    inner = sa.select(*[parent.c[c] for c in fk.parent_columns]).where(
        sa.or_(*preds.direct(fk.parent, parent))
    )
    refs = key_in_select([child.c[c] for c in fk.child_columns], inner)
    # As the row walk does: a row holding another subject's value is never taken
    # along (one written after the pre-flight looked would otherwise go).
    guard = preds.guard(fk.child, child)
    return refs if guard is None else sa.and_(refs, guard)
