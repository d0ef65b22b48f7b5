"""Reading a generated case's tables back: every row, and every dangling reference."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.differential.ddl import Schemas, audit_table, qualified, quote
from tests.differential.schemas import SQLITE, Case

#: Table name (bare) -> id -> the row's values in ``Case.columns`` order.
Tables = dict[str, dict[int, tuple[Any, ...]]]


def table_name(case: Case, schemas: Schemas, index: int) -> str:
    """The name Eraser's report gives table ``index`` (``schema.table``)."""
    spec = case.tables[index]
    schema = schemas.other if spec.other_schema and schemas.other else schemas.main
    return f"{'main' if case.backend == SQLITE else schema}.{spec.name}"


def snapshot(engine: sa.Engine, case: Case, schemas: Schemas) -> tuple[Tables, list[Any]]:
    """Every row of every table by id, and the audit table's ``(table, id)`` entries
    sorted (its sequence numbers differ between two databases and are left out)."""
    tables: Tables = {}
    with engine.connect() as conn:
        for i, spec in enumerate(case.tables):
            cols = ", ".join(quote(case.backend, c) for c in case.columns(i))
            rows = conn.exec_driver_sql(
                f"SELECT {cols} FROM {qualified(case, schemas, spec)} ORDER BY id"
            ).all()
            tables[spec.name] = {int(r[0]): tuple(r) for r in rows}
        audit = conn.exec_driver_sql(f"SELECT tbl, row_id FROM {audit_table(case, schemas)}").all()
    return tables, sorted(tuple(r) for r in audit)


def dangling(engine: sa.Engine, case: Case, schemas: Schemas) -> list[str]:
    """Foreign keys with a referencing row whose referenced row is missing (anti-join)."""
    found = []
    q = case.backend
    with engine.connect() as conn:
        for fk in case.foreign_keys:
            child = qualified(case, schemas, case.tables[fk.child])
            parent = qualified(case, schemas, case.tables[fk.parent])
            present = " AND ".join(f"c.{quote(q, c)} IS NOT NULL" for c in fk.columns)
            match = " AND ".join(
                f"p.{quote(q, pc)} = c.{quote(q, cc)}"
                for cc, pc in zip(fk.columns, fk.parent_columns, strict=True)
            )
            count = conn.exec_driver_sql(
                f"SELECT count(*) FROM {child} c WHERE {present} "
                f"AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
            ).scalar_one()
            if count:
                found.append(f"{case.tables[fk.child].name}.{fk.column}: {count} dangling")
    return found
