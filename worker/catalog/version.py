"""A cheap token that changes whenever a schema changes: one query, not a reflection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.dialects.base import Dialect


def catalog_version_column(
    dialect: Dialect, schemas: Sequence[str] | None
) -> sa.ColumnElement[Any]:
    """``catalog_version`` as a scalar subquery, to read in another statement."""
    query = dialect.version_query(schemas)
    sub = query.columns(sa.column("version")).subquery("catalog_version")
    return sa.select(sa.cast(sub.c.version, sa.String)).scalar_subquery()


def catalog_version(conn: Connection, dialect: Dialect, schemas: Sequence[str] | None) -> str:
    """PostgreSQL's catalog rows get a new ``xmin`` on every DDL, SQLite counts schema
    changes, and on MySQL the definitions are hashed. Used to keep a plan until the
    schema it was made from changes."""
    return str(conn.execute(sa.select(catalog_version_column(dialect, schemas))).scalar())
