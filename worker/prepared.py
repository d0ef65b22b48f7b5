"""Statements built once and, on PostgreSQL, prepared once per connection.

For the small read most tasks run (nothing of the subject here), building the
construct and the server's planning cost more than running it (measurements:
docs/design/engine-notes.md, "Prepared statements"). A ``Prepared`` statement is
compiled once with numbered, typed parameters and sent as ``PREPARE`` the first time a
pooled connection runs it; after that each run is ``EXECUTE name(values)``.

A connection pooler in transaction mode may hand the ``EXECUTE`` to a backend that
never saw the ``PREPARE``: that run (``26000``) goes unprepared, and after a few such
misses the statement is always run unprepared. The names are derived from the SQL
text, so a statement prepared twice on one backend (``42P05``) is the same statement,
and is used. Statements left behind by replaced plans are deallocated once a
connection holds many.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as _numbered
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from worker.database import driver_error

#: Where a pooled connection keeps the names it has prepared (the pool's per-connection
#: ``info``, which lives as long as the DBAPI connection).
_PREPARED = "eraser.prepared"
_NOT_PREPARED = "26000"
_ALREADY_PREPARED = "42P05"
#: After this many EXECUTEs on a backend without the statement, run it unprepared.
_MISSES_BEFORE_PLAIN = 3
#: Prepared statements a connection keeps before it deallocates them all.
_MOST_PER_CONNECTION = 64


class Prepared:
    """``statement`` for PostgreSQL, run through a prepared statement.

    Parameters are the statement's named ``bindparam``s; values a run does not give
    keep those compiled into the statement. Values are converted by the running
    dialect's own bind processors (JSON is serialized as it would be unprepared)."""

    def __init__(
        self, statement: sa.Select[Any] | sa.Update | sa.Delete | sa.Insert, dialect: Dialect
    ) -> None:
        # Compiled by a PostgreSQL dialect that numbers its parameters and casts each to
        # its type, so PREPARE knows every parameter's type; the values themselves go
        # through the connection's dialect (psycopg2).
        compiler = _numbered.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        self.statement = statement
        #: EXECUTEs that found the statement missing on their backend.
        self.misses = 0
        compiled = statement.compile(dialect=compiler)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {type(statement).__name__}")
        self.sql = str(compiled)
        self.order: list[str] = list(compiled.positiontup or [])
        self.defaults: dict[str, Any] = dict(compiled.params)
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name in self.order:
            processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
        digest = hashlib.sha256(self.sql.encode()).hexdigest()[:20]
        self.name = f"eraser_{digest}"
        holes = ", ".join(["%s"] * len(self.order))
        self.execute_sql = f"EXECUTE {self.name}({holes})" if self.order else f"EXECUTE {self.name}"

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name in self.order:
            value = params[name] if name in params else self.defaults[name]
            processor = self.processors.get(name)
            out.append(value if processor is None or value is None else processor(value))
        return tuple(out)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[Any]:
        """Run it on ``conn``, which must be in autocommit mode (a failed PREPARE would
        end the caller's transaction). Errors are SQLAlchemy's ``DBAPIError``s, as they
        would be unprepared."""
        if not _autocommit(conn):
            raise RuntimeError("a prepared statement runs on an autocommit connection")
        if self.misses >= _MISSES_BEFORE_PLAIN:
            return conn.execute(self.statement, dict(params))
        values = self.values(params)
        self._prepare(conn)
        try:
            return conn.exec_driver_sql(self.execute_sql, values)
        except sa.exc.DBAPIError as exc:
            if _sqlstate(exc) != _NOT_PREPARED:
                raise
            # The backend does not have it (a pooler in transaction mode sent the
            # EXECUTE elsewhere, or a DISCARD ALL): run this one unprepared, prepare
            # again next time; a pool where that keeps happening runs it unprepared.
            self.misses += 1
            self._prepared(conn).discard(self.name)
            return conn.execute(self.statement, dict(params))

    def _prepared(self, conn: Connection) -> set[str]:
        info = conn.connection.info
        names: set[str] = info.setdefault(_PREPARED, set())
        return names

    def _prepare(self, conn: Connection) -> None:
        names = self._prepared(conn)
        if self.name in names:
            return
        sql = f"PREPARE {self.name} AS {self.sql}"
        if len(names) >= _MOST_PER_CONNECTION:
            # Plans replaced after schema changes leave their statements behind.
            sql = f"DEALLOCATE ALL; {sql}"
            names.clear()
        dbapi = conn.connection.dbapi_connection
        cursor = dbapi.cursor()  # type: ignore[union-attr]
        try:
            # No parameters: the driver leaves the text (and its % signs) alone.
            cursor.execute(sql)
        except conn.dialect.loaded_dbapi.Error as exc:
            if getattr(exc, "pgcode", None) != _ALREADY_PREPARED:
                raise driver_error(conn, exc, cursor, sql) from exc
        finally:
            cursor.close()
        names.add(self.name)


def _autocommit(conn: Connection) -> bool:
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "pgcode", None)
