"""Clearing the references into a batch before it goes: the referencing rows walked
away (recursively, through the walk), ``SET NULL`` references cleared, and rows of a
cycle met again handed to the batch further up that removes them together."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction
from worker.catalog.model import ForeignKey, TableName
from worker.execution.checked_batches import ReferenceChecker
from worker.execution.context import WalkContext
from worker.execution.keys import Frame, Row, chunks, sorted_keys
from worker.execution.transactions import Transactions
from worker.planning.model import REMOVING, Edge, EdgeMode
from worker.planning.predicates import is_not

#: Walks the rows of a table matching a condition (the walk's own, recursively).
WalkRows = Callable[[TableName, ColumnElement[bool], bool], None]


class ReferenceClearing:
    def __init__(
        self,
        ctx: WalkContext,
        tx: Transactions,
        checks: ReferenceChecker,
        stack: list[Frame],
        walk_rows: WalkRows,
    ) -> None:
        self.ctx = ctx
        self.tx = tx
        self.checks = checks
        #: One frame per batch whose references are being cleared.
        self.stack = stack
        self.walk_rows = walk_rows

    def clear_references(
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
            if edge.mode is EdgeMode.REASSIGN:
                self._reassign(fk, where)
                continue
            guard = self.ctx.preds.guard(fk.child, child)
            if guard is not None:
                where = sa.and_(where, guard)
            if fk.is_self_reference:
                batch = self.ctx.rid[fk.child].matches(child, sorted_keys(self.stack[-1].rids))
                where = sa.and_(where, sa.not_(batch))
            self.walk_rows(fk.child, where, False)

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
            self.walk_rows(fk.child, own, False)
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
            values = self.ctx.plan.info(fk.child).cleared(fk.clearable)
            stmt = sa.update(child).where(where).values(values)
            self.tx.record(fk.child, TableAction.NULLIFY, conn.execute(stmt).rowcount)

    def _reassign(self, fk: ForeignKey, where: ColumnElement[bool]) -> None:
        """Move a ``reassign`` table's reference to the policy's placeholder row (whose
        existence, outside the subject's rows, the pre-flight checked)."""
        child = self.ctx.table(fk.child)
        (column,) = fk.child_columns
        values = self.ctx.plan.info(fk.child).cleared([])
        values[column] = sa.literal(self.ctx.plan.placeholder(fk.child), child.c[column].type)
        with self.tx.transaction() as conn:
            stmt = sa.update(child).where(where).values(values)
            self.tx.record(fk.child, TableAction.REASSIGN, conn.execute(stmt).rowcount)
