"""Create, fill and drop a generated case in a database.

Rows go in with reference checks off for the one loading transaction (PostgreSQL
``session_replication_role = replica``, MariaDB ``FOREIGN_KEY_CHECKS = 0``, SQLite
``foreign_keys = OFF``): the generator only writes references to rows that exist, and this
way cycles (NOT NULL deferrable ones included) load in one pass.
"""

from __future__ import annotations

import sqlalchemy as sa

from tests.differential.ddl import Schemas, create_statements, drop_statements, insert_statements
from tests.differential.schemas import MYSQL, POSTGRESQL, SQLITE, Case


def _run_unchecked(engine: sa.Engine, backend: str, statements: list[str]) -> None:
    if backend == SQLITE:
        # Outside a transaction: SQLite ignores the pragma inside one, and a DROP with
        # checks on deletes the rows first and checks them against missing tables.
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA foreign_keys = OFF")
            try:
                cursor.execute("BEGIN")
                for stmt in statements:
                    cursor.execute(stmt)
                cursor.execute("COMMIT")
            finally:
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.close()
        finally:
            raw.close()
        return
    with engine.begin() as conn:
        if backend == POSTGRESQL:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        elif backend == MYSQL:
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        try:
            for stmt in statements:
                conn.exec_driver_sql(stmt)
        finally:
            if backend == MYSQL:
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


def load(engine: sa.Engine, case: Case, schemas: Schemas, *, oracle: bool = False) -> None:
    """Create the case's schema (its oracle twin with ``oracle``) and insert its rows,
    after dropping whatever an earlier case left."""
    drop(engine, case.backend, schemas)
    with engine.begin() as conn:
        for stmt in create_statements(case, schemas, oracle=oracle):
            conn.exec_driver_sql(stmt)
    _run_unchecked(engine, case.backend, insert_statements(case, schemas))


def drop(engine: sa.Engine, backend: str, schemas: Schemas) -> None:
    """Drop every table a case may have made (and the audit table and function)."""
    _run_unchecked(engine, backend, drop_statements(backend, schemas))


def script(case: Case, schemas: Schemas) -> str:
    """The case as one SQL script (schema, then rows), for a failure's report."""
    return (
        ";\n".join(
            create_statements(case, schemas, oracle=False) + insert_statements(case, schemas)
        )
        + ";"
    )
