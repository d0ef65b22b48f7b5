"""Batches removed with the database's reference checks off and Eraser checking the
references into them itself, in the same transaction (see ``reference_checks``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction
from worker.catalog.model import ForeignKey, TableName
from worker.dialects.postgresql_arrays import addressed_by, pg_array, row_address
from worker.execution.context import WalkContext
from worker.execution.deleted_rows import Gone, delete_returning
from worker.execution.keys import Row, chunks, sorted_keys
from worker.execution.reference_checks import Shortcut
from worker.execution.transactions import Transactions
from worker.planning.model import Edge


class StillReferenced(Exception):
    """A probe found a row referencing the batch: roll back, let the database decide."""


class Overflow(Exception):
    """A batch with everything swept along would exceed a short transaction's rows."""

    def __init__(self, widest: ForeignKey | None) -> None:
        super().__init__("transaction budget exceeded")
        self.widest = widest


class ReferenceChecker:
    """Sweeps, clears and probes the references into a batch removed with the checks
    off, within the transaction's row budget."""

    def __init__(self, ctx: WalkContext, tx: Transactions) -> None:
        self.ctx = ctx
        self.tx = tx
        #: Parent tables whose batches go with Eraser checking the references.
        self.shortcuts: dict[TableName, Shortcut] = {}
        #: Sweep references found too wide for one transaction: cleared beforehand.
        self.wide: set[ForeignKey] = set()
        #: Tables with at least one batch committed with Eraser checking references.
        self.checked: set[TableName] = set()

    def swept(self, table: TableName, edge: Edge) -> bool:
        """Whether ``edge``'s rows go in the same transaction as ``table``'s batch."""
        shortcut = self.shortcuts.get(table)
        return shortcut is not None and edge.fk in shortcut.sweep and edge.fk not in self.wide

    def remove_checked(self, table: TableName, rows: list[Row], shortcut: Shortcut) -> None:
        """Remove a batch with the database's reference triggers off and check the
        references into it set-wise instead."""
        target = self.ctx.table(table)
        rid = self.ctx.rid[table]
        where = rid.matches(target, [r.rid for r in rows])
        guard = self.ctx.preds.guard(table, target)
        if guard is not None:
            where = sa.and_(where, guard)
        stmt = sa.delete(target).where(where)
        gone = delete_returning(self.ctx.conn, stmt, target, shortcut.referenced, None)
        self.tx.record(table, self.ctx.plan.actions[table], gone.count)
        self.tx.rows = gone.count
        self.references_gone(shortcut, gone)

    def references_gone(
        self, shortcut: Shortcut, gone: Gone, top: ForeignKey | None = None
    ) -> None:
        """Inside the transaction that removed ``gone``, with the reference triggers
        off: sweep (recursively), clear and probe every reference into those rows.
        Raises ``Overflow`` past the transaction's row budget, naming the reference
        of the batch's own table that swept the most rows (``top``)."""
        if not gone.count:
            return
        for fk in shortcut.sweep:
            if fk in self.wide:
                self._probe_all(fk, self._chunks(fk, gone))
            else:
                self._sweep(fk, gone, top)
        for fk in shortcut.clear:
            child = self.ctx.table(fk.child)
            for refs in self._chunks(fk, gone):
                nulled = sa.update(child).where(refs).values(dict.fromkeys(fk.child_columns))
                count = int(self.ctx.conn.execute(nulled).rowcount)
                self.tx.record(fk.child, TableAction.NULLIFY, count)
        for fk in shortcut.probe:
            self._probe_all(fk, self._chunks(fk, gone))

    def _sweep(self, fk: ForeignKey, gone: Gone, top: ForeignKey | None) -> None:
        """Remove the rows referencing ``gone`` through ``fk``, and theirs with them.

        A referencing row of another subject (its subject column says so) is removed
        too, but seen: the transaction is rolled back and the batch goes the database's
        way, which reports it. One statement instead of a second look-up of the same
        keys."""
        child = self.ctx.table(fk.child)
        child_guard = self.ctx.preds.guard(fk.child, child)
        inner = self.shortcuts[fk.child]
        foreign = None if child_guard is None else sa.not_(child_guard)
        for refs in self._chunks(fk, gone):
            room = self.tx.budget - self.tx.rows
            sub = sa.select(row_address()).select_from(child).where(refs).limit(room + 1)
            stmt = sa.delete(child).where(addressed_by(sub))
            swept = delete_returning(self.ctx.conn, stmt, child, inner.referenced, foreign)
            if swept.foreign:
                raise StillReferenced()
            self.tx.rows += swept.count
            through = top or fk
            self.tx.swept[through] = self.tx.swept.get(through, 0) + swept.count
            if swept.count > room:
                raise Overflow(max(self.tx.swept, key=self.tx.swept.__getitem__))
            self.tx.record(fk.child, self.ctx.plan.actions[fk.child], swept.count)
            self.references_gone(inner, swept, through)

    def _chunks(self, fk: ForeignKey, gone: Gone) -> Iterator[ColumnElement[bool]]:
        """The references to ``gone``'s rows through ``fk``, a batch's worth at a time."""
        n = self.ctx.opts.batch_size
        child = self.ctx.table(fk.child)
        cols = [child.c[c] for c in fk.child_columns]
        if len(cols) == 1:
            flat: list[Any] = sorted(
                {v for v in gone.columns[fk.parent_columns[0]] if v is not None}
            )
            for i in range(0, len(flat), n):
                yield cols[0] == sa.any_(pg_array(flat[i : i + n], cols[0].type))
            return
        rows = zip(*(gone.columns[c] for c in fk.parent_columns), strict=True)
        refs = sorted_keys({key for key in rows if None not in key})
        for chunk in chunks(refs, n):
            yield self.ctx.dialect.key_in(cols, chunk)

    def _probe_all(self, fk: ForeignKey, refs: Iterable[ColumnElement[bool]]) -> None:
        child = self.ctx.table(fk.child)
        for cond in refs:
            found = self.ctx.conn.execute(
                sa.select(sa.literal(1)).select_from(child).where(cond).limit(1)
            )
            if found.first() is not None:
                raise StillReferenced()
