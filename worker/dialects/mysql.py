"""MySQL and MariaDB: catalog reading (and its misreadings refused), keys read as the
driver gives them, exact text matches, the session's lock wait, ``GET_LOCK``, error
numbers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import TableInfo, TableName, Trigger
from worker.dialects.base import Dialect, ErrorClass, SchemaFacts, reset_session
from worker.exceptions import UnsupportedTable

_VERSION = """
SELECT CONCAT_WS(':',
  (SELECT CONCAT(COUNT(*), '/', COALESCE(SUM(CRC32(CONCAT_WS('|', TABLE_SCHEMA, TABLE_NAME,
      COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE))), 0))
   FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN :schemas),
  (SELECT CONCAT(COUNT(*), '/', COALESCE(SUM(CRC32(CONCAT_WS('|', TABLE_SCHEMA, TABLE_NAME,
      INDEX_NAME, COLUMN_NAME, SEQ_IN_INDEX, NON_UNIQUE))), 0))
   FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN :schemas),
  (SELECT CONCAT(COUNT(*), '/', COALESCE(SUM(CRC32(CONCAT_WS('|', k.TABLE_SCHEMA, k.TABLE_NAME,
      k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, k.REFERENCED_TABLE_NAME,
      k.REFERENCED_COLUMN_NAME, r.DELETE_RULE))), 0))
   FROM information_schema.KEY_COLUMN_USAGE k
   LEFT JOIN information_schema.REFERENTIAL_CONSTRAINTS r
     ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
   WHERE k.TABLE_SCHEMA IN :schemas),
  (SELECT CONCAT(COUNT(*), '/', COALESCE(SUM(CRC32(CONCAT_WS('|', TRIGGER_SCHEMA,
      TRIGGER_NAME, EVENT_OBJECT_TABLE, EVENT_MANIPULATION))), 0))
   FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA IN :schemas)) AS version
"""

#: Error numbers (PyMySQL puts them in ``args[0]``) worth retrying.
_TRANSIENT = {
    1205: "lock wait timeout exceeded",
    1213: "deadlock found",
    1040: "too many connections",
    1053: "server shutdown in progress",
    1927: "connection killed",
    2002: "cannot connect (socket)",
    2003: "cannot connect to the server",
    2006: "server has gone away",
    2013: "lost connection during query",
    2014: "commands out of sync after a lost connection",
    3024: "query execution interrupted (timeout)",
    4031: "disconnected by the server (idle timeout)",
}
_PERMANENT = {
    1142: "command denied (permission)",
    1143: "column command denied (permission)",
    1044: "access denied to database",
    1045: "access denied (credentials)",
    1049: "unknown database",
    1146: "table does not exist",
    1054: "unknown column",
    1451: "foreign-key violation",
}
#: Numbers whose message names objects (tables, databases), never row values.
_MESSAGE_SAFE = {1142, 1143, 1146, 1049}
#: A parent row is still referenced / a referenced row is missing.
_FK_ERRORS = (1451, 1452)
#: A UTF-8 character set that holds every character, to compare text as bytes.
_UTF8MB4 = mysql.CHAR(charset="utf8mb4")


class MySQL(Dialect):
    name = "mysql"
    aliases = ("mariadb",)
    defers_checks = False
    self_references_leaves_first = True
    blocks_self_pointing_rows = True
    schemas_known_before_reflecting = False
    #: MariaDB copies a CTE into every statement part that reads it: an unrolled
    #: cycle with two paths round it grew exponentially (a server killed at 24 GB).
    unrolls_cycles = False

    def connect_args(self) -> dict[str, Any]:
        return {"connect_timeout": 10}

    # --- catalog reading --------------------------------------------------------------

    def version_query(self, schemas: Sequence[str] | None) -> sa.TextClause:
        return sa.text(_VERSION).bindparams(
            sa.bindparam("schemas", list(schemas or []), expanding=True)
        )

    def schema_facts(self, conn: Connection, schema: str, tables: Iterable[str]) -> SchemaFacts:
        return SchemaFacts(
            triggers=self.triggers(conn, schema),
            versioned=_system_versioned(conn, schema),
            stamped=_stamped_columns(conn, schema),
        )

    def triggers(self, conn: Connection, schema: str) -> dict[str, list[Trigger]]:
        found: dict[str, list[Trigger]] = {}
        rows = conn.execute(
            sa.text(
                "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION "
                "FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = :schema "
                "ORDER BY TRIGGER_NAME"
            ),
            {"schema": schema},
        )
        for table, name, timing, event in rows:
            found.setdefault(table, []).append(Trigger(name, str(timing), (str(event),)))
        return found

    def check_schema(
        self, conn: Connection, schema: str, found: dict[TableName, TableInfo]
    ) -> None:
        _check_foreign_keys(conn, schema, found)
        _check_column_names(conn, schema, found)

    def related_schemas(
        self, conn: Connection, schema: str, found: dict[TableName, TableInfo]
    ) -> list[str]:
        """The databases the foreign keys point into, and those whose foreign keys
        point into this one: their rows must be cleared (or refused) like any other
        reference."""
        parents = [fk.parent.schema for info in found.values() for fk in info.foreign_keys]
        return [*parents, *_referencing_schemas(conn, schema)]

    # --- rows and keys ----------------------------------------------------------------

    def driver_value(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        if isinstance(column.type, mysql.BIT):
            # A BIT comes as bytes, which MySQL compares with as a string: as a number.
            return sa.type_coerce(column, _BitNumber())
        return super().driver_value(column)

    def addressable(self, type_: sa.types.TypeEngine[Any]) -> bool:
        # A single-precision FLOAT is compared as a double: 0.1 stored is not 0.1.
        return super().addressable(type_) and not isinstance(type_, mysql.FLOAT)

    def exact_match(
        self,
        column: ColumnElement[Any],
        value: ColumnElement[Any],
        match: ColumnElement[bool],
        inexact: bool,
    ) -> ColumnElement[bool]:
        """A text column compares by its collation, where ``'Kunde-U'`` equals
        ``'kunde-ü'`` and ``'a '`` equals ``'a'``: the indexed comparison is kept and a
        binary one is added, so only the exact value matches."""
        if not isinstance(column.type, sa.String):
            return match
        # Both sides as utf8mb4 first: a latin1 or utf16 column's bytes are not the
        # bytes of the same text sent by the client.
        stored: ColumnElement[Any] = column
        if isinstance(column.type, sa.CHAR):
            # A CHAR value has no trailing spaces, but PAD_CHAR_TO_FULL_LENGTH in the
            # session's sql_mode reads it padded to its length.
            stored = sa.func.rtrim(column)
        return sa.and_(match, _exact_text(stored) == _exact_text(value))

    # --- sessions and batches ---------------------------------------------------------

    def session_setup(self, conn: Connection, lock_timeout_ms: int) -> None:
        """The lock wait is a session setting, in whole seconds (at least one)."""
        seconds = max(1, (int(lock_timeout_ms) + 999) // 1000)
        conn.execute(sa.text(f"SET SESSION innodb_lock_wait_timeout = {seconds}"))
        conn.commit()

    def session_reset(self, conn: Connection) -> None:
        reset_session(conn, "SET SESSION innodb_lock_wait_timeout = DEFAULT")

    @contextmanager
    def bounded_reads(self, conn: Connection, seconds: int) -> Iterator[None]:
        """MariaDB's ``max_statement_time`` (seconds), MySQL's ``max_execution_time``
        (milliseconds, SELECTs only), for the block; put back after it."""
        name, limit = ("max_statement_time", seconds)
        if not getattr(conn.dialect, "is_mariadb", False):
            name, limit = ("max_execution_time", seconds * 1000)
        before = conn.execute(sa.text(f"SELECT @@SESSION.{name}")).scalar_one()
        if before and float(before) <= limit:
            yield
            return
        conn.execute(sa.text(f"SET SESSION {name} = {limit}"))
        try:
            yield
        finally:
            if not conn.invalidated:
                conn.execute(sa.text(f"SET SESSION {name} = {before}"))

    @contextmanager
    def bounded_waits(self, conn: Connection, timeout_ms: int | None) -> Iterator[None]:
        """``lock_wait_timeout`` (metadata locks, whole seconds) and, on MariaDB,
        ``max_statement_time`` for the block; the session's values put back after it.
        (InnoDB's plain reads take no row locks, so they do not wait on rows.)"""
        if timeout_ms is None:
            yield
            return
        names = ["lock_wait_timeout"]
        limits = [max(1, -(-int(timeout_ms) // 1000))]
        if getattr(conn.dialect, "is_mariadb", False):
            names.append("max_statement_time")
            limits.append(max(1, -(-int(timeout_ms) // 1000)))
        before = conn.execute(sa.text("SELECT " + ", ".join(f"@@SESSION.{n}" for n in names))).one()
        _set_session(conn, dict(zip(names, limits, strict=True)))
        try:
            yield
        finally:
            if not conn.invalidated:
                _set_session(conn, dict(zip(names, before, strict=True)))

    @contextmanager
    def without_fk_checks(self, conn: Connection) -> Iterator[None]:
        conn.execute(sa.text("SET SESSION foreign_key_checks = 0"))
        try:
            yield
        finally:
            conn.execute(sa.text("SET SESSION foreign_key_checks = 1"))

    # --- subject locks ----------------------------------------------------------------

    def try_lock(self, conn: Connection, number: int, name: str) -> bool:
        return bool(conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar())

    def unlock(self, conn: Connection, number: int, name: str) -> None:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})

    # --- errors -------------------------------------------------------------------------

    def classify_error(self, orig: object) -> ErrorClass | None:
        args: tuple[Any, ...] = tuple(getattr(orig, "args", None) or ())
        if not type(orig).__module__.startswith("pymysql") or not args:
            return None
        if not isinstance(args[0], int):
            return None
        number = args[0]
        label = _TRANSIENT.get(number)
        transient = label is not None
        if label is None:
            label = _PERMANENT.get(number, f"database error {type(orig).__name__}")
        text = f"{label} (MySQL error {number})"
        if number in _MESSAGE_SAFE and len(args) > 1 and isinstance(args[1], str):
            text = f"{text}: {str(args[1]).strip().splitlines()[0]}"
        return ErrorClass(transient, str(number), text)

    def is_foreign_key_violation(self, exc: sa.exc.DBAPIError) -> bool:
        args: tuple[Any, ...] = tuple(getattr(exc.orig, "args", ()))
        return bool(args) and args[0] in _FK_ERRORS


class _BitNumber(sa.types.TypeDecorator[int]):
    """A BIT value as the number it is, read and sent."""

    impl = sa.BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> int | None:
        return int.from_bytes(value, "big") if isinstance(value, bytes) else value


def _exact_text(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """``value``'s text as utf8mb4 bytes, whatever its character set."""
    return sa.func.binary(sa.cast(value, _UTF8MB4))


def _check_foreign_keys(conn: Connection, schema: str, found: dict[TableName, TableInfo]) -> None:
    """Refuse a schema with a foreign key the reflection lost: SQLAlchemy reads MySQL's
    keys from ``SHOW CREATE TABLE`` and drops one it cannot parse (a backtick in a name),
    and an erasure blind to a reference could let the database cascade into another
    subject's rows."""
    declared = conn.execute(
        sa.text(
            "SELECT TABLE_NAME, CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = :schema"
        ),
        {"schema": schema},
    ).all()
    read = {(t.name, fk.name) for t, info in found.items() for fk in info.foreign_keys}
    for table, constraint in declared:
        if TableName(schema, str(table)) in found and (str(table), str(constraint)) not in read:
            raise UnsupportedTable(
                str(TableName(schema, str(table))),
                f"its foreign key {constraint} could not be read from the schema",
            )


def _check_column_names(conn: Connection, schema: str, found: dict[TableName, TableInfo]) -> None:
    """Refuse a table whose column names the reflection misread: SQLAlchemy keeps the
    doubled backtick of ``SHOW CREATE TABLE`` in a name that holds one, and every
    statement naming that column would fail. Only a name with a backtick in it is
    checked (one query, for those tables)."""
    suspect = {
        t.name: info for t, info in found.items() if any("`" in c.name for c in info.table.columns)
    }
    if not suspect:
        return
    columns = conn.execute(
        sa.text(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = :schema AND TABLE_NAME IN :tables"
        ).bindparams(sa.bindparam("tables", expanding=True)),
        {"schema": schema, "tables": sorted(suspect)},
    ).all()
    for name, info in sorted(suspect.items()):
        declared = sorted(str(c) for t, c in columns if t == name)
        if sorted(c.name for c in info.table.columns) != declared:
            raise UnsupportedTable(
                str(TableName(schema, name)),
                "a column name holding a backtick could not be read from the schema",
            )


def _system_versioned(conn: Connection, schema: str) -> set[str]:
    """MariaDB's system-versioned tables in ``schema`` (MySQL has none)."""
    return {
        str(t)
        for (t,) in conn.execute(
            sa.text(
                "SELECT TABLE_NAME FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = :schema AND TABLE_TYPE = 'SYSTEM VERSIONED'"
            ),
            {"schema": schema},
        )
    }


def _stamped_columns(conn: Connection, schema: str) -> dict[str, set[str]]:
    """Per table of ``schema``, its ``ON UPDATE CURRENT_TIMESTAMP`` columns (MySQL
    spells the clause ``on update CURRENT_TIMESTAMP``, MariaDB ``on update
    current_timestamp()``, with a precision where the column has one)."""
    found: dict[str, set[str]] = {}
    rows = conn.execute(
        sa.text(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = :schema AND LOWER(EXTRA) LIKE '%on update current_timestamp%'"
        ),
        {"schema": schema},
    )
    for table, column in rows:
        found.setdefault(str(table), set()).add(str(column))
    return found


def _referencing_schemas(conn: Connection, schema: str) -> list[str]:
    """The other databases holding foreign keys into ``schema``."""
    return [
        str(s)
        for (s,) in conn.execute(
            sa.text(
                "SELECT DISTINCT CONSTRAINT_SCHEMA FROM information_schema.REFERENTIAL_CONSTRAINTS"
                " WHERE UNIQUE_CONSTRAINT_SCHEMA = :schema AND CONSTRAINT_SCHEMA <> :schema"
                " ORDER BY CONSTRAINT_SCHEMA"
            ),
            {"schema": schema},
        )
    ]


def _set_session(conn: Connection, values: dict[str, Any]) -> None:
    """``SET SESSION`` each of ``values`` (numbers the server itself gave, or ours)."""
    conn.execute(sa.text("SET " + ", ".join(f"SESSION {n} = {v}" for n, v in values.items())))
