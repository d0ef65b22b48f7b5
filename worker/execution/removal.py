"""Reading a batch of rows and removing (or anonymizing) it, inside the caller's
transaction: by key after the references were cleared, or, for a table nothing
references, chosen and removed in one statement where the database allows it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction
from worker.catalog.model import TableName
from worker.dialects.postgresql_arrays import addressed_by, row_address
from worker.execution.context import WalkContext
from worker.execution.deleted_rows import delete_returning
from worker.execution.keys import Row
from worker.execution.self_references import SelfReferences
from worker.execution.transactions import Transactions
from worker.planning.predicates import key_in_select


class BatchRemoval:
    def __init__(self, ctx: WalkContext, tx: Transactions) -> None:
        self.ctx = ctx
        self.tx = tx
        self.self_references = SelfReferences(ctx)

    def fetch(
        self,
        table: TableName,
        where: ColumnElement[bool],
        limit: int,
        ordered: bool = True,
        lock: bool = False,
    ) -> list[Row]:
        """Up to ``limit`` rows matching ``where`` (locked, in the caller's transaction,
        with ``lock``; else in a read transaction of their own)."""
        conn = self.ctx.conn
        target = self.ctx.table(table)
        rid = self.ctx.rid[table]
        rid_cols = rid.select_columns(target)
        needed = self.ctx.needed[table]
        values = [self.ctx.dialect.driver_value(target.c[c]) for c in needed]
        stmt = sa.select(*rid_cols, *values).select_from(target).where(where).limit(limit)
        if ordered:
            stmt = stmt.order_by(*rid.order_by(target))
        if lock:
            stmt = stmt.with_for_update()
            raw = conn.execute(stmt).all()
        else:
            with conn.begin():
                raw = conn.execute(stmt).all()
        k = len(rid_cols)
        return [Row(tuple(r[:k]), dict(zip(needed, r[k:], strict=True))) for r in raw]

    def remove_leaf_batch(
        self, table: TableName, where: ColumnElement[bool], limit: int, ordered: bool
    ) -> tuple[int, tuple[Any, ...] | None]:
        """Inside the caller's transaction, remove up to ``limit`` rows matching ``where``
        from a table nothing references. Returns the count and the last key."""
        rid = self.ctx.rid[table]
        target = self.ctx.table(table)
        action = self.ctx.plan.actions[table]
        if rid.kind == "none":
            delete = sa.delete(target).where(where).with_dialect_options(mysql_limit=limit)
            count = int(self.ctx.conn.execute(delete).rowcount)
            self.tx.record(table, action, count)
            return count, None
        if self.ctx.dialect.one_statement_batches and not self.ctx.plan.info(table).rules:
            return self._remove_leaf_batch_at_once(table, where, limit, ordered)
        # (A PostgreSQL table with rules on its writes cannot take a DELETE in a WITH
        # query or with RETURNING: it goes by key, as on MySQL.)
        # MySQL cannot delete from a table it selects from in a subquery: lock the batch
        # in key order first, then remove it by key.
        rows = self.fetch(table, where, limit, ordered, lock=True)
        if rows:
            # The subject's column is checked again with the keys: a key that named
            # another row must not take it along.
            self.remove_rows(table, rows)
        return len(rows), rows[-1].rid if rows else None

    def _remove_leaf_batch_at_once(
        self, table: TableName, where: ColumnElement[bool], limit: int, ordered: bool
    ) -> tuple[int, tuple[Any, ...] | None]:
        """PostgreSQL: one statement, ``DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ...
        LIMIT n))``; the DELETE (or UPDATE) takes the row locks itself. A row updated
        meanwhile has a new ``ctid`` and is skipped, for the next batch or the
        verification pass to find. Partitioned tables repeat ``ctid`` across
        partitions, so they go by key (measurements: docs/design/engine-notes.md)."""
        conn = self.ctx.conn
        rid = self.ctx.rid[table]
        target = self.ctx.table(table)
        action = self.ctx.plan.actions[table]
        partitioned = self.ctx.plan.info(table).partitioned
        address = rid.order_by(target) if partitioned else [row_address()]
        sub = sa.select(*address).select_from(target).where(where).limit(limit)
        if ordered:
            sub = sub.order_by(*rid.order_by(target))
        chosen = key_in_select(address, sub) if partitioned else addressed_by(sub)
        stmt: sa.Delete | sa.Update
        if action is TableAction.ANONYMIZE:
            stmt = sa.update(target).where(chosen).values(dict(self.ctx.plan.policies[table].set))
        else:
            stmt = sa.delete(target).where(chosen)
        if not ordered:
            count = int(conn.execute(stmt).rowcount)
            self.tx.record(table, action, count)
            return count, None
        if rid.kind == "key":
            # The count and the greatest key, not a row per removed row.
            keys = rid.select_columns(target)
            gone = delete_returning(conn, stmt, target, (), None, keys, rid.sort_key)
            self.tx.record(table, action, gone.count)
            return gone.count, gone.last
        found = [tuple(r) for r in conn.execute(stmt.returning(*rid.select_columns(target)))]
        self.tx.record(table, action, len(found))
        return len(found), max(found, key=rid.sort_key) if found else None

    def remove_rows(self, table: TableName, rows: list[Row]) -> None:
        """Remove a batch whose references were cleared; the statement takes the row
        locks, rows gone meanwhile are skipped, and a row that moved to another subject
        is left alone."""
        conn = self.ctx.conn
        target = self.ctx.table(table)
        rid = self.ctx.rid[table]
        action = self.ctx.plan.actions[table]
        guard = self.ctx.preds.guard(table, target)

        def where(batch: list[Row]) -> ColumnElement[bool]:
            keys = rid.matches(target, [r.rid for r in batch])
            return keys if guard is None else sa.and_(keys, guard)

        if action is TableAction.ANONYMIZE:
            pol = self.ctx.plan.policies[table]
            stmt = sa.update(target).where(where(rows)).values(dict(pol.set))
            self.tx.record(table, action, conn.execute(stmt).rowcount)
            return
        count = 0
        for level in self.self_references.levels(table, rows):
            plain, self_pointing = self.self_references.split_self_pointing(table, level)
            if plain:
                count += self.ctx.conn.execute(sa.delete(target).where(where(plain))).rowcount
            if self_pointing:
                count += self.self_references.delete_self_pointing(table, self_pointing)
        self.tx.record(table, action, count)
