"""The walk: a batched cascade that removes the subject's rows, children first.

For every anchor table (children first), the subject's rows are read in key order, a
batch at a time; before a batch is removed, the rows referencing it are removed the
same way (``= ANY(keys)`` look-ups through the foreign-key index), recursively. Each
removal is its own short transaction, so every lock is brief and every committed
state is foreign-key consistent. Nothing is remembered between batches but the
position of the current walk, so a re-run after a crash simply finds what is left.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction, TableOutcome
from worker.catalog.model import TableName
from worker.execution.batch_erasure import BatchEraser
from worker.execution.checked_batches import ReferenceChecker
from worker.execution.checked_walk import CheckedWalk
from worker.execution.context import WalkContext
from worker.execution.cycles import CycleBreaker
from worker.execution.keys import Frame, Row
from worker.execution.options import ExecutionOptions, ProgressCallback
from worker.execution.partitions import PartitionErasure
from worker.execution.preflight import deep_statements
from worker.execution.reference_clearing import ReferenceClearing
from worker.execution.removal import BatchRemoval
from worker.execution.server_batches import ServerBatches
from worker.execution.transactions import Transactions
from worker.execution.verification import verification
from worker.planning.model import Plan
from worker.planning.predicates import Predicates

#: Rows referencing one batch of parents go in one transaction of up to this many
#: batches' worth (a typical fan-out fits in one statement; a huge one is split).
_CHILD_BATCH_FACTOR = 4


class Walker:
    """One erasure's walk over its connection, composed of the transactions, batch
    removal, reference checks, cycle breaking and server-side batches."""

    def __init__(
        self,
        conn: Connection,
        plan: Plan,
        subject: object,
        options: ExecutionOptions,
        progress: ProgressCallback | None,
        started: float,
    ) -> None:
        self.ctx = WalkContext.start(conn, plan, subject, options)
        self.tx = Transactions(self.ctx, progress, started)
        self.removal = BatchRemoval(self.ctx, self.tx)
        self.checks = ReferenceChecker(self.ctx, self.tx)
        self.server = ServerBatches(self.ctx, self.tx, self.checks)
        self.checked_walk = CheckedWalk(self.ctx, self.tx, self.checks, self.server)
        #: One frame per batch whose references are being cleared.
        self.stack: list[Frame] = []
        self.cycles = CycleBreaker(self.ctx, self.tx, self.stack)
        self.clearing = ReferenceClearing(self.ctx, self.tx, self.checks, self.stack, self._walk)
        self.eraser = BatchEraser(
            self.ctx, self.tx, self.removal, self.checks, self.cycles, self.clearing
        )
        self.partitions = PartitionErasure(self.ctx, self.tx, self._walk)

    @property
    def preds(self) -> Predicates:
        return self.ctx.preds

    def walk(self) -> None:
        """One pass: every anchor (and shared) table, children first. The walk recurses
        into the rows referencing a batch: a chain of rows each referencing the one
        before (round a cycle) is as many levels deep, hence ``deep_statements()``."""
        plan = self.ctx.plan
        self.ctx.done.clear()
        with deep_statements():
            for table in plan.order:
                if table in plan.anchors or table in plan.orphan_links:
                    self.partitions.erase(table)
                    self._walk(table, self._anchor_where(table))
                    self.ctx.done.add(table)

    def verify(self) -> int:
        """How many tables still hold rows of the subject (0 means verified)."""
        with self.ctx.conn.begin():
            left = 0
            # One round trip: a statement of EXISTS columns, a few dozen at a time.
            for statement in verification(self.ctx.plan, self.ctx.preds, None):
                row = tuple(self.ctx.conn.execute(statement).one())
                left += sum(1 for found in row if found)
            return left

    def outcomes(self) -> list[TableOutcome]:
        return self.tx.outcomes()

    def _anchor_where(self, table: TableName) -> ColumnElement[bool]:
        target = self.ctx.table(table)
        if table in self.ctx.plan.orphan_links:
            return self.ctx.preds.orphan(table, target)
        return sa.or_(*self.ctx.preds.direct(table, target))

    def _walk(self, table: TableName, where: ColumnElement[bool], ordered: bool = True) -> None:
        """Remove every row of ``table`` matching ``where``, batch by batch.

        ``ordered`` walks in key order with a keyset (``key > last``): used for anchors,
        whose predicate would otherwise rescan the rows already removed. Rows looked up
        through a parent's keys (``fk = ANY(keys)``) are bounded by those keys and need
        no order, which also keeps PostgreSQL from walking the whole primary key to
        satisfy an ORDER BY ... LIMIT.
        """
        plan = self.ctx.plan
        if plan.actions[table] is TableAction.ANONYMIZE:
            # Anonymized rows stay: skip those already done, or the walk would never end.
            done = self.ctx.preds.anonymized(table, self.ctx.table(table))
            where = sa.and_(where, sa.not_(done))
        ordered = ordered or table in plan.cycle_of
        if self.ctx.is_leaf(table) or self.ctx.rid[table].kind == "none":
            self._walk_leaf(table, where, ordered)
            return
        if self.checked_walk.applies(table) and self.checked_walk.walk(table, where, ordered):
            return
        self._walk_by_key(table, where, ordered)

    def _walk_leaf(self, table: TableName, where: ColumnElement[bool], ordered: bool) -> None:
        """A table nothing references (for the walk): batches chosen and removed at once."""
        loop = self.server.loop(table, where, leaf=True) if ordered else None
        if loop is not None and self.server.walk(table, loop):
            return
        rid = self.ctx.rid[table]
        n = self.ctx.opts.batch_size
        limit = n if ordered else n * _CHILD_BATCH_FACTOR
        last: tuple[Any, ...] | None = None
        while True:
            cond = where if last is None else sa.and_(where, rid.after(self.ctx.table(table), last))
            with self.tx.transaction():
                done, last_key = self.removal.remove_leaf_batch(table, cond, limit, ordered)
            if done < limit:
                return
            if ordered:
                if last is not None and last_key == last:
                    return  # a key that does not come back as read: no progress
                last = last_key

    def _walk_by_key(self, table: TableName, where: ColumnElement[bool], ordered: bool) -> None:
        """Batches read by key, their references cleared, then removed."""
        n = self.ctx.opts.batch_size
        rid = self.ctx.rid[table]
        last: tuple[Any, ...] | None = None
        previous: set[tuple[Any, ...]] = set()
        while True:
            cond = where if last is None else sa.and_(where, rid.after(self.ctx.table(table), last))
            rows = self.removal.fetch(table, cond, n, ordered)
            if not rows:
                return
            keys = {r.rid for r in rows}
            if not ordered and keys == previous:
                return  # nothing could be removed; the verification count reports it
            previous = keys
            self._erase_batch(table, rows)
            if ordered:
                if last is not None and rows[-1].rid == last:
                    # A key the driver does not send back as it read it: the same batch
                    # would come back for ever. The verification reports what is left.
                    return
                last = rows[-1].rid
            if len(rows) < n:
                return

    def _erase_batch(self, table: TableName, rows: list[Row]) -> None:
        if table in self.ctx.plan.cycle_of:
            fresh, busy = self.cycles.split_in_progress(table, rows)
        else:
            fresh, busy = rows, []
        if busy:
            self.cycles.reached_in_progress(table, busy)
        if fresh:
            self.eraser.erase(table, fresh)
