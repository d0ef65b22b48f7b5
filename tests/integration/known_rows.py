"""Schemas whose rows' owners are known row by row (``Data``), and an erasure of
tenant 1 checked against its dry run (``run``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from models.erasure import ErasureReport, TablePolicy
from tests.conftest import TargetDB
from worker.catalog.reflection import reflect
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

SUBJECT = 1


Row = dict[str, Any]


class Data:
    """Rows with a known owner; computes what must survive an erasure."""

    def __init__(self, db: TargetDB) -> None:
        self.db = db
        self.tables: list[sa.Table] = []
        self.rows: dict[str, list[tuple[Row, int]]] = {}

    def add(self, table: sa.Table, owner: int, **values: Any) -> Row:
        if table.fullname not in self.rows:
            self.tables.append(table)
            self.rows[table.fullname] = []
        self.rows[table.fullname].append((values, owner))
        return values

    def load(self) -> None:
        with self.db.engine.begin() as conn:
            if self.db.backend == "sqlite":
                conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
            for table in self.tables:
                rows = [r for r, _ in self.rows[table.fullname]]
                conn.execute(sa.insert(table), rows)

    def expected(
        self, survives: Callable[[sa.Table, Row, int], Row | None] | None = None
    ) -> dict[str, list[tuple[Any, ...]]]:
        result = {}
        for table in self.tables:
            kept = []
            for original, owner in self.rows[table.fullname]:
                row: Row | None = original
                if survives is not None:
                    row = survives(table, dict(original), owner)
                elif owner == SUBJECT:
                    row = None
                if row is not None:
                    kept.append(tuple(row.get(c.name) for c in table.columns))
            result[table.fullname] = sorted(kept, key=repr)
        return result

    def subject_rows(self) -> int:
        return sum(1 for rows in self.rows.values() for _, owner in rows if owner == SUBJECT)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return self.db.snapshot(*self.tables)


def run(
    db: TargetDB,
    subject_columns: list[str],
    policies: dict[str, TablePolicy] | None = None,
    batch_size: int = 3,
    schemas: list[str] | None = None,
) -> tuple[ErasureReport, ErasureReport]:
    """Plan, dry-run, erase; check that the dry run predicted the erasure."""
    catalog = reflect(db.engine, schemas)
    plan = build_plan(catalog, subject_columns, policies)
    predicted = dry_run(db.engine, plan, SUBJECT)
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=batch_size))
    assert report.verified
    assert predicted.total_rows == report.total_rows
    assert {(t.table, t.action, t.rows) for t in predicted.tables} == {
        (t.table, t.action, t.rows) for t in report.tables
    }
    return predicted, report


def col(name: str, *args: Any, **kw: Any) -> sa.Column[Any]:
    kw.setdefault("autoincrement", False)
    return sa.Column(name, *args, **kw)


def tenant_table(md: sa.MetaData, name: str) -> sa.Table:
    """``name(id, tenant_id)``: a table that holds the subject column."""
    return sa.Table(
        name,
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
    )


def tenant_child_table(
    md: sa.MetaData,
    name: str,
    column: str,
    parent: str,
    *,
    tenant_nullable: bool = False,
    nullable: bool = False,
) -> sa.Table:
    """``name(id, tenant_id, column -> parent)``: a table that holds the subject column
    and references ``parent`` (its own ``id`` for a tree). ``tenant_nullable``: rows
    may be tied to the subject only through ``column``."""
    return sa.Table(
        name,
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, nullable=tenant_nullable, index=True),
        col(column, sa.Integer, sa.ForeignKey(parent), nullable=nullable, index=True),
    )


def child_table(
    md: sa.MetaData, name: str, column: str, parent: str, ondelete: str | None = None
) -> sa.Table:
    """``name(id, column -> parent)``: a table reached only through a foreign key."""
    return sa.Table(
        name,
        md,
        col("id", sa.Integer, primary_key=True),
        col(
            column, sa.Integer, sa.ForeignKey(parent, ondelete=ondelete), nullable=False, index=True
        ),
    )
