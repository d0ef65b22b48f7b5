"""A table walked batch by batch, each batch in one transaction with every row
referencing it (Eraser checking the references), in the server where it can."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import TableName
from worker.dialects.postgresql_arrays import addressed_by, row_address
from worker.execution.checked_batches import Overflow, ReferenceChecker, StillReferenced
from worker.execution.context import WalkContext
from worker.execution.deleted_rows import delete_returning
from worker.execution.server_batches import ServerBatches
from worker.execution.transactions import Transactions
from worker.planning.model import REMOVING, EdgeMode


class CheckedWalk:
    def __init__(
        self,
        ctx: WalkContext,
        tx: Transactions,
        checks: ReferenceChecker,
        server: ServerBatches,
    ) -> None:
        self.ctx = ctx
        self.tx = tx
        self.checks = checks
        self.server = server

    def applies(self, table: TableName) -> bool:
        """Whether each batch of ``table`` can go in one transaction with every
        reference into it: all of them are swept, cleared or known empty."""
        plan = self.ctx.plan
        shortcut = self.checks.shortcuts.get(table)
        if shortcut is None:
            return False
        for edge in plan.children.get(table, []):
            if self.checks.swept(table, edge) or self.ctx.already_cleared(edge):
                continue
            nulled_only = plan.actions.get(edge.fk.child) not in REMOVING
            if edge.mode is EdgeMode.NULLIFY and edge.fk in shortcut.clear and nulled_only:
                continue
            return False
        return True

    def walk(self, table: TableName, where: ColumnElement[bool], ordered: bool) -> bool:
        """Remove the rows of ``table`` matching ``where`` batch by batch. False when a
        batch met a reference it may not clear, or one too wide for a short transaction
        even for a single row: the caller goes on the general way."""
        loop = self.server.loop(table, where, leaf=False) if ordered else None
        if loop is not None:
            return self.server.walk(table, loop)
        last: tuple[Any, ...] | None = None
        while True:
            n = self.tx.batch_size(table)
            try:
                count, last_key = self._batch(
                    table, self._statement(table, where, last, n, ordered), ordered
                )
            except StillReferenced:
                return False
            except Overflow as over:
                if n > 1:
                    self.tx.shrink_batch(table, n, self.tx.top, self.tx.rows)
                    continue
                if over.widest is not None:
                    self.checks.wide.add(over.widest)
                return False
            if count:
                self.checks.checked.add(table)
            if count < n:
                return True
            if ordered:
                last = last_key

    def _statement(
        self,
        table: TableName,
        where: ColumnElement[bool],
        last: tuple[Any, ...] | None,
        n: int,
        ordered: bool,
    ) -> sa.Delete:
        """The DELETE of the next ``n`` rows (after ``last``, in key order if
        ``ordered``), chosen by row address."""
        target = self.ctx.table(table)
        rid = self.ctx.rid[table]
        cond = where if last is None else sa.and_(where, rid.after(target, last))
        sub = sa.select(row_address()).select_from(target).where(cond).limit(n)
        if ordered:
            sub = sub.order_by(*rid.order_by(target))
        return sa.delete(target).where(addressed_by(sub))

    def _batch(
        self, table: TableName, stmt: sa.Delete, ordered: bool
    ) -> tuple[int, tuple[Any, ...] | None]:
        """One batch and everything referencing it, in one transaction with the
        database's checks off; its count and greatest key."""
        target = self.ctx.table(table)
        rid = self.ctx.rid[table]
        shortcut = self.checks.shortcuts[table]
        keys = rid.select_columns(target) if ordered else []
        with self.tx.transaction(checks_off=True):
            gone = delete_returning(
                self.ctx.conn, stmt, target, shortcut.referenced, None, keys, rid.sort_key
            )
            self.tx.record(table, self.ctx.plan.actions[table], gone.count)
            self.tx.rows = self.tx.top = gone.count
            self.checks.references_gone(shortcut, gone)
        return gone.count, gone.last
