"""Rows that reference each other round a foreign-key cycle: a nullable reference
cleared, or the rows removed together in one transaction (deferred checks, or one
statement of writable CTEs)."""

from __future__ import annotations

import sqlalchemy as sa

from worker.catalog.model import CASCADE, ForeignKey, TableName
from worker.exceptions import UnsatisfiablePlan
from worker.execution.context import WalkContext
from worker.execution.keys import Frame, Row, sorted_keys
from worker.execution.transactions import Transactions
from worker.graph import children_first
from worker.planning.model import CycleStrategy, EdgeMode


class CycleBreaker:
    """Deals with rows of a cycle met again while their own batch is being cleared.

    ``stack`` is the walk's: one frame per batch whose references are being cleared."""

    def __init__(self, ctx: WalkContext, tx: Transactions, stack: list[Frame]) -> None:
        self.ctx = ctx
        self.tx = tx
        self.stack = stack

    def split_in_progress(
        self, table: TableName, rows: list[Row]
    ) -> tuple[list[Row], list[tuple[int, Row]]]:
        """``rows`` not being erased further up, and those that are (with their frame)."""
        fresh: list[Row] = []
        busy: list[tuple[int, Row]] = []
        for row in rows:
            owner = next(
                (i for i, f in enumerate(self.stack) if f.table == table and row.rid in f.rids),
                None,
            )
            if owner is None:
                fresh.append(row)
            else:
                busy.append((owner, row))
        return fresh, busy

    def reached_in_progress(self, table: TableName, busy: list[tuple[int, Row]]) -> None:
        """Rows of ``table`` already being erased further up reference the current frame's
        rows: clear a nullable reference, or remove them together in one transaction."""
        plan = self.ctx.plan
        current = self.stack[-1]
        fks = [
            e.fk
            for e in plan.children.get(current.table, [])
            if e.mode is EdgeMode.DELETE and e.fk.child == table
        ]
        nullable = [fk for fk in fks if fk.nullable]
        if nullable and len(nullable) == len(fks):
            self._clear(table, nullable, busy)
            return
        owner = min(i for i, _ in busy)
        if self.removal_order({f.table for f in self.stack[owner:]} | {table}) is not None:
            # A nullable reference elsewhere in the loop, between frames further up (a
            # reference of the cycle, or a SET NULL one the walk followed): the rows of
            # the frames in between go with the owner's batch, which clears the
            # nullable references among them and removes them children first.
            self._defer_to(owner)
            return
        cycle = plan.cycle_of.get(table)
        if cycle is None or (not cycle.hard and cycle.strategy is not CycleStrategy.TREE):
            raise UnsatisfiablePlan([str(table), str(current.table)], "unexpected reference cycle")
        if not self.ctx.dialect.defers_checks:
            raise UnsatisfiablePlan(
                [str(table), str(current.table), str(table)],
                "rows reference each other through NOT NULL keys; MySQL cannot defer the check",
            )
        self._defer_to(owner)

    def removal_order(self, tables: set[TableName]) -> list[TableName] | None:
        """An order (children first) in which rows of ``tables`` that reference each
        other can be removed one table at a time once the nullable references among
        them are cleared; None where NOT NULL references among them go round."""
        hard: dict[TableName, list[TableName]] = {}
        for fk in self._references_among(tables):
            if not fk.nullable:
                if fk.is_self_reference:
                    return None
                hard.setdefault(fk.parent, []).append(fk.child)
        order, cyclic = children_first(tables, hard)
        return None if cyclic else order

    def _references_among(self, tables: set[TableName]) -> list[ForeignKey]:
        catalog = self.ctx.plan.catalog
        return [fk for t in sorted(tables) for fk in catalog.incoming(t) if fk.child in tables]

    def _defer_to(self, owner: int) -> None:
        """The current frame's rows go in the transaction of frame ``owner``."""
        current = self.stack[-1]
        if current.deferred_to is None or owner < current.deferred_to:
            current.deferred_to = owner

    def _clear(self, table: TableName, fks: list[ForeignKey], busy: list[tuple[int, Row]]) -> None:
        rid = self.ctx.rid[table]
        target = self.ctx.table(table)
        info = self.ctx.plan.info(table)
        with self.tx.transaction() as conn:
            for fk in fks:
                conn.execute(
                    sa.update(target)
                    .where(rid.matches(target, [r.rid for _, r in busy]))
                    .values(info.cleared(self._breaking_columns(fk)))
                )

    def _breaking_columns(self, fk: ForeignKey) -> list[str]:
        """The columns to set NULL to break ``fk`` on a row: its nullable columns, but
        not the subject column or a column other rows reference (``(tenant_id,
        parent_id)``: only ``parent_id``), unless nothing else would do."""
        plan = self.ctx.plan
        referenced = {c for ref in plan.catalog.incoming(fk.child) for c in ref.parent_columns}
        subject = set(plan.anchors.get(fk.child, ()))
        preferred = [c for c in fk.clearable if c not in referenced and c not in subject]
        return preferred or list(fk.clearable)

    def remove_group(self, group: list[tuple[TableName, list[Row]]]) -> None:
        """Remove rows that reference each other through NOT NULL keys, all at once,
        inside the caller's transaction.

        Where a reference among them is ``ON DELETE CASCADE``, the database may remove
        some of them itself, as another goes first (its cascade is never deferred):
        the rows counted are then those present before and gone after, not the
        statements' own counts."""
        plan = self.ctx.plan
        strategy = next(
            (
                plan.cycle_of[t].strategy
                for t, _ in group
                if t in plan.cycle_of and plan.cycle_of[t].hard
            ),
            CycleStrategy.DEFERRED,
        )
        cycle = next((plan.cycle_of[t] for t, _ in group if t in plan.cycle_of), None)
        rank = {t: i for i, t in enumerate(cycle.removal_order)} if cycle else {}
        merged: dict[TableName, list[Row]] = {}
        for table, rows in sorted(group, key=lambda g: rank.get(g[0], -1)):
            merged.setdefault(table, []).extend(rows)
        cascades = any(fk.on_delete == CASCADE for fk in self._references_among(set(merged)))
        before = self._present(merged) if cascades else {}
        order = self.removal_order(set(merged))
        if order is not None:
            counts = self._remove_in_order(merged, order)
        elif self.ctx.dialect.writable_ctes and strategy is not CycleStrategy.DEFERRED:
            counts = self._remove_in_one_statement(merged)
        else:
            self.ctx.dialect.defer_constraints(self.ctx.conn)
            counts = {}
            for table, rows in merged.items():
                target = self.ctx.table(table)
                rid = self.ctx.rid[table]
                stmt = sa.delete(target).where(rid.matches(target, [r.rid for r in rows]))
                counts[table] = int(self.ctx.conn.execute(stmt).rowcount)
        if cascades:
            after = self._present(merged)
            counts = {t: before[t] - after[t] for t in merged}
        for table, count in counts.items():
            self.tx.record(table, plan.actions[table], count)

    def _present(self, merged: dict[TableName, list[Row]]) -> dict[TableName, int]:
        """How many of each table's rows are there, in the caller's transaction."""
        found = {}
        for table, rows in merged.items():
            target = self.ctx.table(table)
            rid = self.ctx.rid[table]
            keys = sorted_keys({r.rid for r in rows})
            stmt = sa.select(sa.func.count()).select_from(target)
            found[table] = int(
                self.ctx.conn.execute(stmt.where(rid.matches(target, keys))).scalar_one()
            )
        return found

    def _remove_in_order(
        self, merged: dict[TableName, list[Row]], order: list[TableName]
    ) -> dict[TableName, int]:
        """Inside the caller's transaction: the nullable references among the rows
        cleared (they go in this transaction anyway), then the rows removed table by
        table in ``order``, so that no check needs deferring (MySQL cannot)."""
        plan = self.ctx.plan
        conn = self.ctx.conn
        for fk in self._references_among(set(merged)):
            if fk.nullable:
                target = self.ctx.table(fk.child)
                rid = self.ctx.rid[fk.child]
                keys = sorted_keys(r.rid for r in merged[fk.child])
                values = plan.info(fk.child).cleared(self._breaking_columns(fk))
                conn.execute(sa.update(target).where(rid.matches(target, keys)).values(values))
        counts = {}
        for table in order:
            target = self.ctx.table(table)
            rid = self.ctx.rid[table]
            keys = sorted_keys(r.rid for r in merged[table])
            stmt = sa.delete(target).where(rid.matches(target, keys))
            counts[table] = int(conn.execute(stmt).rowcount)
        return counts

    def _remove_in_one_statement(self, merged: dict[TableName, list[Row]]) -> dict[TableName, int]:
        """One statement of data-modifying CTEs, whose checks run at its end."""
        ctes = []
        for i, (table, rows) in enumerate(merged.items()):
            target = self.ctx.table(table)
            rid = self.ctx.rid[table]
            stmt = sa.delete(target).where(rid.matches(target, [r.rid for r in rows]))
            ctes.append((table, stmt.returning(sa.literal(1).label("x")).cte(f"removed_{i}")))
        counts = sa.select(
            *[sa.select(sa.func.count()).select_from(c).scalar_subquery() for _, c in ctes]
        )
        result = self.ctx.conn.execute(counts).one()
        return {table: int(count) for (table, _), count in zip(ctes, result, strict=True)}
