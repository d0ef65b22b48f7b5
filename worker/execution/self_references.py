"""A batch of a self-referencing table where the database checks row by row: leaves
first, and (MySQL) tree roots that point at themselves removed with the checks off
once nothing else references them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from worker.catalog.model import CASCADE, ForeignKey, TableName
from worker.dialects.base import Dialect
from worker.exceptions import UnsatisfiablePlan
from worker.execution.context import WalkContext
from worker.execution.keys import Row, sorted_keys
from worker.planning.model import EdgeMode


class SelfReferences:
    def __init__(self, ctx: WalkContext) -> None:
        self.ctx = ctx

    def levels(self, table: TableName, rows: list[Row]) -> Iterable[list[Row]]:
        """A batch of a self-referencing table goes leaves first on MySQL, which checks
        foreign keys row by row, and on SQLite, whose ON DELETE CASCADE would remove a
        child mid-statement without counting it; PostgreSQL checks at statement end."""
        self_fks = [
            e.fk
            for e in self.ctx.plan.children.get(table, [])
            if e.mode is EdgeMode.DELETE and e.fk.is_self_reference
        ]
        if not self.ctx.dialect.self_references_leaves_first or not self_fks:
            yield rows
            return
        remaining = list(rows)
        while remaining:
            referenced: set[tuple[Any, ...]] = set()
            for fk in self_fks:
                for r in remaining:
                    ref = tuple(r.values[c] for c in fk.child_columns)
                    own = tuple(r.values[c] for c in fk.parent_columns)
                    if None not in ref and ref != own:
                        referenced.add((fk.name, *ref))
            level = [
                r
                for r in remaining
                if not any(
                    (fk.name, *(r.values[c] for c in fk.parent_columns)) in referenced
                    for fk in self_fks
                )
            ]
            if not level:
                # The rows left reference each other round the self-reference: where
                # it is nullable, it is cleared on them (they go in this transaction);
                # else they go together with the checks deferred, where the database
                # can. (The pre-flight refuses the others before any write.)
                self._break_loop(table, self_fks, remaining)
                level = remaining
            yield level
            chosen = {id(r) for r in level}
            remaining = [r for r in remaining if id(r) not in chosen]

    def _break_loop(self, table: TableName, fks: list[ForeignKey], rows: list[Row]) -> None:
        if all(fk.nullable for fk in fks):
            self._clear(table, fks, rows)
        elif loops_deferrable(self.ctx.dialect, fks):
            self._clear(table, [fk for fk in fks if fk.nullable], rows)
            self.ctx.dialect.defer_constraints(self.ctx.conn)
        else:
            raise UnsatisfiablePlan([str(table), str(table)], "rows reference each other")

    def _clear(self, table: TableName, fks: list[ForeignKey], rows: list[Row]) -> None:
        """Set the self-references of ``rows`` to NULL, inside the caller's transaction;
        not a subject column, nor a column other rows reference, unless nothing else
        clears the reference."""
        plan = self.ctx.plan
        target = self.ctx.table(table)
        rid = self.ctx.rid[table]
        referenced = {c for ref in plan.catalog.incoming(table) for c in ref.parent_columns}
        keep = referenced | set(plan.anchors.get(table, ()))
        keys = sorted_keys(r.rid for r in rows)
        for fk in fks:
            columns = [c for c in fk.clearable if c not in keep] or list(fk.clearable)
            values = plan.info(table).cleared(columns)
            self.ctx.conn.execute(sa.update(target).where(rid.matches(target, keys)).values(values))

    def split_self_pointing(self, table: TableName, rows: list[Row]) -> tuple[list[Row], list[Row]]:
        """On MySQL, rows whose NOT NULL self-reference points at themselves (tree roots)
        cannot be deleted while foreign-key checks are on; set them apart."""
        fks = [
            fk
            for fk in self.ctx.plan.info(table).foreign_keys
            if fk.is_self_reference and self.ctx.dialect.blocks_self_pointing_rows
        ]
        if not fks:
            return rows, []
        plain: list[Row] = []
        pointing: list[Row] = []
        for row in rows:
            own = any(
                all(
                    row.values[c] == row.values[p]
                    for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
                )
                for fk in fks
            )
            (pointing if own else plain).append(row)
        return plain, pointing

    def delete_self_pointing(self, table: TableName, rows: list[Row]) -> int:
        """Delete self-pointing rows with the checks off for one statement, after
        proving (under the batch's row locks) that nothing else references them."""
        ctx = self.ctx
        conn = ctx.conn
        target = ctx.table(table)
        rid = ctx.rid[table]
        ids = [r.rid for r in rows]
        lock = sa.select(*rid.select_columns(target)).where(rid.matches(target, ids))
        conn.execute(lock.with_for_update()).all()
        for fk in ctx.plan.catalog.incoming(table):
            child = ctx.table(fk.child).alias()
            refs = sorted_keys({tuple(r.values[c] for c in fk.parent_columns) for r in rows})
            where = ctx.dialect.key_in([child.c[c] for c in fk.child_columns], refs)
            if fk.is_self_reference:
                own = ctx.dialect.key_in([child.c[c] for c in rid.columns], ids)
                where = sa.and_(where, sa.not_(own))
            found = conn.execute(
                sa.select(sa.func.count()).select_from(child).where(where)
            ).scalar_one()
            if found:
                raise UnsatisfiablePlan(
                    [str(fk.child), str(table)], "rows still reference a tree root"
                )
        with ctx.dialect.without_fk_checks(conn):
            delete = sa.delete(target).where(rid.matches(target, ids))
            return int(conn.execute(delete).rowcount)


def loops_deferrable(dialect: Dialect, fks: list[ForeignKey]) -> bool:
    """Whether rows that reference each other round the NOT NULL ones of ``fks`` (a
    table's self-references) can be removed in one transaction: the database defers
    the check (SQLite), and none cascades (a cascade would remove some of them in
    the middle of the statement, uncounted)."""
    hard = [fk for fk in fks if not fk.nullable]
    return dialect.defers_checks and not any(fk.on_delete == CASCADE for fk in hard)
