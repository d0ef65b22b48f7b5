"""The walk: a batched cascade that removes the subject's rows, children first.

For every anchor table (children first), the subject's rows are read in key order, a
batch at a time; before a batch is removed, the rows referencing it are removed the
same way (``= ANY(keys)`` look-ups through the foreign-key index), recursively. Each
removal is its own short transaction, so every lock is brief and every committed
state is foreign-key consistent. Nothing is remembered between batches but the
position of the current walk, so a re-run after a crash simply finds what is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction, TableOutcome
from worker.catalog.model import ForeignKey, TableName
from worker.execution.checked_batches import Overflow, ReferenceChecker, StillReferenced
from worker.execution.checked_walk import CheckedWalk
from worker.execution.context import WalkContext
from worker.execution.cycles import CycleBreaker
from worker.execution.keys import Frame, Row, chunks, sorted_keys
from worker.execution.options import ExecutionOptions, ProgressCallback
from worker.execution.removal import BatchRemoval
from worker.execution.server_batches import ServerBatches
from worker.execution.transactions import Transactions
from worker.execution.verification import verification
from worker.planning.model import REMOVING, Edge, EdgeMode, Plan
from worker.planning.predicates import Predicates, is_not

#: Attempts at removing a batch when writers keep adding references to it.
_FK_RACE_ATTEMPTS = 5
#: Set on a foreign-key violation that outlived a batch's attempts.
_EXHAUSTED = "eraser_attempts_exhausted"
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

    @property
    def preds(self) -> Predicates:
        return self.ctx.preds

    def walk(self) -> None:
        """One pass: every anchor (and shared) table, children first."""
        plan = self.ctx.plan
        self.ctx.done.clear()
        for table in plan.order:
            if table in plan.anchors or table in plan.orphan_links:
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
            self._erase_rows(table, fresh)

    def _erase_rows(self, table: TableName, rows: list[Row]) -> None:
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
                        self._clear_references(table, rows, False, set())
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

    def _clear_references(
        self, table: TableName, rows: list[Row], optimistic: bool, cleared: set[ForeignKey]
    ) -> Frame | None:
        """Clear (remove or null) the rows referencing ``rows``. Returns their frame, or
        None when a cycle deferred their removal to a batch further up."""
        depth = len(self.stack)
        frame = Frame(table, {r.rid for r in rows})
        self.stack.append(frame)
        try:
            for edge in self._edges_to_clear(table, optimistic, cleared):
                self._clear_edge(edge, rows)
                cleared.add(edge.fk)
        finally:
            self.stack.pop()
        if frame.deferred_to is not None and frame.deferred_to < depth:
            owner = self.stack[frame.deferred_to]
            owner.group.extend(frame.group)
            owner.group.append((table, rows))
            if frame.deferred_to < depth - 1:
                parent = self.stack[depth - 1]
                if parent.deferred_to is None or frame.deferred_to < parent.deferred_to:
                    parent.deferred_to = frame.deferred_to
            return None
        return frame

    def _edges_to_clear(
        self, table: TableName, optimistic: bool, cleared: set[ForeignKey]
    ) -> Iterator[Edge]:
        """The references into ``table`` to clear, each decided as its turn comes
        (clearing one may change what the next needs)."""
        removing = self.ctx.plan.actions[table] in REMOVING
        for edge in self.ctx.plan.children.get(table, []):
            if (edge.mode is not EdgeMode.DELETE and not removing) or edge.fk in cleared:
                continue
            if optimistic and (self.ctx.already_cleared(edge) or self.checks.swept(table, edge)):
                continue
            yield edge

    def _erase_rows_after(
        self, table: TableName, rows: list[Row], optimistic: bool, cleared: set[ForeignKey]
    ) -> None:
        frame = self._clear_references(table, rows, optimistic, cleared)
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

    def _clear_edge(self, edge: Edge, rows: list[Row]) -> None:
        fk = edge.fk
        refs = sorted_keys(
            {
                tuple(r.values[c] for c in fk.parent_columns)
                for r in rows
                if all(r.values[c] is not None for c in fk.parent_columns)
            }
        )
        if not refs or edge.mode is EdgeMode.DATABASE:
            return
        child = self.ctx.table(fk.child)
        cols = [child.c[c] for c in fk.child_columns]
        for chunk in chunks(refs, self.ctx.opts.batch_size):
            where = self.ctx.dialect.key_in(cols, chunk)
            if edge.mode is EdgeMode.NULLIFY:
                self._clear_set_null(fk, where)
                continue
            guard = self.ctx.preds.guard(fk.child, child)
            if guard is not None:
                where = sa.and_(where, guard)
            if fk.is_self_reference:
                batch = self.ctx.rid[fk.child].matches(child, sorted_keys(self.stack[-1].rids))
                where = sa.and_(where, sa.not_(batch))
            self._walk(fk.child, where, ordered=False)

    def _clear_set_null(self, fk: ForeignKey, where: ColumnElement[bool]) -> None:
        if self.ctx.plan.actions.get(fk.child) in REMOVING:
            # The subject's own rows behind a SET NULL reference go first: the
            # database would clear their key, which may hold the subject column.
            child = self.ctx.table(fk.child)
            own = sa.and_(where, self.ctx.preds.member(fk.child, child))
            # Not the rows being erased further up (a SET NULL self-reference or
            # cycle among the subject's rows): they go in their own frame.
            rid = self.ctx.rid[fk.child]
            for frame in self.stack:
                if frame.table == fk.child and frame.rids:
                    busy = rid.matches(child, sorted_keys(frame.rids))
                    own = sa.and_(own, sa.not_(busy))
            self._walk(fk.child, own, ordered=False)
        self._nullify(fk, where)

    def _nullify(self, fk: ForeignKey, where: ColumnElement[bool]) -> None:
        """Clear an ON DELETE SET NULL reference on rows that are not erased themselves."""
        child = self.ctx.table(fk.child)
        rid = self.ctx.rid[fk.child]
        with self.tx.transaction() as conn:
            if self.ctx.plan.actions.get(fk.child) in REMOVING and rid.kind != "none":
                # Leave the subject's own rows alone. Their keys are found first: MariaDB
                # cannot parse a CTE inside an UPDATE, and SQLite reports no row count
                # for one.
                others = sa.and_(where, is_not(self.ctx.preds.member(fk.child, child)))
                found = sa.select(*rid.select_columns(child)).select_from(child).where(others)
                keys = [tuple(r) for r in conn.execute(found)]
                if not keys:
                    return
                where = rid.matches(child, keys)
            stmt = sa.update(child).where(where).values(dict.fromkeys(fk.clearable))
            self.tx.record(fk.child, TableAction.NULLIFY, conn.execute(stmt).rowcount)
