"""Erasing one batch: its references cleared, then its rows removed, in the database's
way or with Eraser checking the references; retried when writers race it, the last
time with the rows held locked from a second connection."""

from __future__ import annotations

import sqlalchemy as sa

from worker.catalog.model import ForeignKey, TableName
from worker.execution.checked_batches import Overflow, ReferenceChecker, StillReferenced
from worker.execution.context import WalkContext
from worker.execution.cycles import CycleBreaker
from worker.execution.keys import Row
from worker.execution.reference_clearing import ReferenceClearing
from worker.execution.removal import BatchRemoval
from worker.execution.transactions import Transactions

#: Attempts at removing a batch when writers keep adding references to it.
_FK_RACE_ATTEMPTS = 5
#: Set on a foreign-key violation that outlived a batch's attempts.
_EXHAUSTED = "eraser_attempts_exhausted"


class BatchEraser:
    def __init__(
        self,
        ctx: WalkContext,
        tx: Transactions,
        removal: BatchRemoval,
        checks: ReferenceChecker,
        cycles: CycleBreaker,
        clearing: ReferenceClearing,
    ) -> None:
        self.ctx = ctx
        self.tx = tx
        self.removal = removal
        self.checks = checks
        self.cycles = cycles
        self.clearing = clearing

    def erase(self, table: TableName, rows: list[Row]) -> None:
        """Clear everything that references ``rows``, then remove them.

        A writer may commit a new referencing row between the two; the database then
        refuses the delete (a foreign-key violation, nothing written), so the
        references are cleared again, a bounded number of times. The last time, a
        second connection holds the rows locked while their references are cleared
        (``_erase_rows_holding``), so that writers wait instead of racing.
        """
        for attempt in range(1, _FK_RACE_ATTEMPTS + 1):
            try:
                if attempt == _FK_RACE_ATTEMPTS and self._may_hold(table):
                    self._erase_rows_holding(table, rows)
                else:
                    self._erase_rows_once(table, rows, optimistic=attempt == 1)
                return
            except sa.exc.IntegrityError as exc:
                if getattr(exc, _EXHAUSTED, False):
                    raise
                if not self.ctx.dialect.is_foreign_key_violation(exc):
                    raise
                if attempt == _FK_RACE_ATTEMPTS:
                    # Not retried again by the batches this one is nested in: each level
                    # retrying would cost attempts ** depth statements.
                    setattr(exc, _EXHAUSTED, True)
                    raise

    def _may_hold(self, table: TableName) -> bool:
        """Whether a batch of ``table`` can be held locked from a second connection
        while its references are cleared: row locks (not SQLite, whose writers queue
        anyway) and no cycle (whose batches are removed together, as a group)."""
        return self.ctx.dialect.row_locks and table not in self.ctx.plan.cycle_of

    def _erase_rows_holding(self, table: TableName, rows: list[Row]) -> None:
        """Lock ``rows`` (``FOR UPDATE``) in a transaction of a second connection, clear
        their references on this one, then remove them in the held transaction.

        A writer adding a reference to a locked row needs a share lock on it, so it
        waits and then fails, the row being gone; a writer that held such a lock first
        has committed before the lock was granted, and its row is cleared with the
        others. The references are cleared in their usual short transactions, which
        never lock the held rows, so nothing waits on itself."""
        ctx = self.ctx
        main = ctx.conn
        with (
            main.engine.connect() as held,
            ctx.dialect.erasure_session(held, ctx.opts.lock_timeout_ms),
        ):
            try:
                ctx.dialect.bind_subject(held, ctx.preds.session_values())
                ctx.conn = held
                with self.tx.transaction():
                    target = ctx.table(table)
                    rid = ctx.rid[table]
                    where = rid.matches(target, [r.rid for r in rows])
                    lock = sa.select(*rid.select_columns(target)).where(where).with_for_update()
                    held.execute(lock).all()
                    ctx.conn = main
                    try:
                        # (Each reference's own walk keeps its transactions within budget.)
                        self.clearing.clear_references(table, rows, False, set())
                    finally:
                        ctx.conn = held
                    self.removal.remove_rows(table, rows)
            finally:
                ctx.conn = main

    def _erase_rows_once(self, table: TableName, rows: list[Row], optimistic: bool) -> None:
        cleared: set[ForeignKey] = set()
        while True:
            try:
                self._erase_rows_after(table, rows, optimistic, cleared)
                return
            except Overflow:
                continue  # a reference now goes in batches of its own: clear it first

    def _erase_rows_after(
        self, table: TableName, rows: list[Row], optimistic: bool, cleared: set[ForeignKey]
    ) -> None:
        frame = self.clearing.clear_references(table, rows, optimistic, cleared)
        if frame is None:
            return
        shortcut = self.checks.shortcuts.get(table)
        if shortcut is not None and not frame.group:
            try:
                with self.tx.transaction(checks_off=True):
                    self.checks.remove_checked(table, rows, shortcut)
                self.checks.checked.add(table)
                return
            except Overflow as over:
                if over.widest is not None:
                    self.checks.wide.add(over.widest)
                    raise  # that reference is cleared first, then the batch again
                # (an overflow always names a reference; if not, the database's way)
            except StillReferenced:
                pass  # rolled back: the database checks this batch, and reports it
        with self.tx.transaction():
            if frame.group:
                self.cycles.remove_group([*frame.group, (table, rows)])
            else:
                self.removal.remove_rows(table, rows)
