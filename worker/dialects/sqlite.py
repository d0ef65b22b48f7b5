"""SQLite: connection setup, catalog reading (its own ON DELETE record, triggers), rows
named by rowid, exact matches beside declared collations and typeless columns,
``PRAGMA`` read-only and deferred checks, and its error texts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import TableInfo, Trigger
from worker.dialects.base import Dialect, ErrorClass, SchemaFacts, unsupported
from worker.dialects.rows import RowIdentity

#: The names SQLite answers to for a rowid table's row id; a column of the same name
#: hides one (``CREATE TABLE log (rowid INT, ...)``), so the first free one is used.
_ROWID_NAMES = ("rowid", "_rowid_", "oid")
_TRIGGER = re.compile(r"\b(BEFORE|AFTER|INSTEAD\s+OF)?\s*(DELETE|INSERT|UPDATE)\b", re.IGNORECASE)
#: The extended result code SQLITE_CONSTRAINT_FOREIGNKEY.
_FK_ERROR = 787


class SQLite(Dialect):
    name = "sqlite"
    row_locks = False
    defers_all_checks = True
    self_references_leaves_first = True

    def connect_args(self) -> dict[str, Any]:
        return {"timeout": 30}

    def configure(self, engine: Engine) -> None:
        """Foreign keys enforced, and explicit ``BEGIN`` so that transactions (and
        ``PRAGMA defer_foreign_keys``) behave as on the other databases."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # ``sqlite_begin="IMMEDIATE"`` (an execution option) takes the write lock at
            # BEGIN: two deferred transactions that both read and then write would fail
            # with "database is locked" at once instead of waiting for each other.
            mode = conn.get_execution_options().get("sqlite_begin", "")
            conn.exec_driver_sql(f"BEGIN {mode}" if mode == "IMMEDIATE" else "BEGIN")

    def check_exists(self, url: URL) -> str | None:
        """A mistyped path would otherwise leave an empty database file behind and fail
        later as "no table has the subject column"."""
        if url.query.get("uri") in ("true", "1"):
            return None
        name = url.database or ""
        if name in ("", ":memory:") or Path(name).is_file():
            return None
        return "no such database file"

    # --- catalog reading --------------------------------------------------------------

    def version_query(self, schemas: Sequence[str] | None) -> sa.TextClause:
        return sa.text("SELECT schema_version AS version FROM pragma_schema_version()")

    def inspected_schema(self, schema: str) -> str | None:
        return None if schema == "main" else schema

    def system_table(self, name: str) -> bool:
        return name.startswith("sqlite_")

    def parent_schema(self, schema: str, default_schema: str) -> str:
        return schema

    def schema_facts(self, conn: Connection, schema: str, tables: Iterable[str]) -> SchemaFacts:
        return SchemaFacts(
            triggers=self.triggers(conn, schema), delete_rules=_delete_rules(conn, tables)
        )

    def triggers(self, conn: Connection, schema: str) -> dict[str, list[Trigger]]:
        found: dict[str, list[Trigger]] = {}
        rows = conn.execute(
            sa.text(
                "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
            )
        )
        for table, name, sql in rows:
            match = _TRIGGER.search(str(sql or "").split(" ON ", 1)[0])
            timing = (match.group(1) or "BEFORE").upper() if match else "BEFORE"
            event_ = match.group(2).upper() if match else "UNKNOWN"
            found.setdefault(table, []).append(Trigger(name, timing, (event_,)))
        return found

    # --- rows and keys ----------------------------------------------------------------

    def row_identity(self, info: TableInfo) -> RowIdentity:
        """A rowid table's primary key may hold NULLs unless declared NOT NULL, and a
        NULL key names no row: such tables are walked by rowid too."""
        key = self.usable_key(info)
        if key and not any(info.columns[c].nullable for c in key):
            return RowIdentity("key", self, key)
        taken = {c.lower() for c in info.columns}
        for name in _ROWID_NAMES:
            if name not in taken:
                return RowIdentity("rowid", self, alias=name)
        raise unsupported(info, "its columns hide every name of its rowid (rowid, _rowid_, oid)")

    def exact_match(
        self,
        column: ColumnElement[Any],
        value: ColumnElement[Any],
        match: ColumnElement[bool],
        inexact: bool,
    ) -> ColumnElement[bool]:
        if isinstance(column.type, sa.String):
            # A column declared COLLATE NOCASE or RTRIM compares by it ('ACME' equals
            # 'acme'); the collation isn't reflected, so a binary comparison is added.
            return sa.and_(match, column == value.collate("BINARY"))
        if isinstance(column.type, sa.types.NullType):
            # A column without a declared type keeps each value as it came: 42, '42'
            # and 42.0 are all there. Text that spells a number exactly matches the
            # number too, and a number matches its text. (Numbers only: compared with
            # a NUMERIC expression, the text ' 42' would be read as a number too.)
            number = sa.cast(value, sa.Numeric())
            text = sa.cast(value, sa.Text())
            spelled = sa.cast(number, sa.Text()) == text
            numeric = sa.func.typeof(column).in_(["integer", "real"])
            return sa.or_(match, sa.and_(numeric, column == number, spelled), column == text)
        return match

    # --- sessions and batches ---------------------------------------------------------

    def begin_read_only(self, conn: Connection) -> None:
        conn.execute(sa.text("PRAGMA query_only = ON"))

    def end_read_only(self, conn: Connection) -> None:
        conn.execute(sa.text("PRAGMA query_only = OFF"))

    def defer_constraints(self, conn: Connection) -> None:
        conn.execute(sa.text("PRAGMA defer_foreign_keys = ON"))

    @contextmanager
    def subject_lock(
        self, engine: Engine, parts: Sequence[str], wait_seconds: float
    ) -> Iterator[None]:
        """SQLite serialises writers by itself."""
        yield

    # --- errors -------------------------------------------------------------------------

    def classify_error(self, orig: object) -> ErrorClass | None:
        """A busy or locked database clears up; anything else (no such table, a
        read-only file, a malformed database) does not."""
        if type(orig).__module__ != "sqlite3":
            return None
        name = type(orig).__name__
        text = str(orig).lower()
        if "locked" in text or "busy" in text:
            return ErrorClass(True, name, "database is locked (SQLite)")
        if "no such table" in text:
            return ErrorClass(False, name, "table does not exist (SQLite)")
        if "readonly" in text or "read-only" in text:
            return ErrorClass(False, name, "the database file is read-only (SQLite)")
        return ErrorClass(False, name, f"database error {name} (SQLite)")

    def is_foreign_key_violation(self, exc: sa.exc.DBAPIError) -> bool:
        return getattr(exc.orig, "sqlite_errorcode", None) == _FK_ERROR


def _delete_rules(
    conn: Connection, tables: Iterable[str]
) -> dict[tuple[str, str, tuple[str, ...]], str]:
    """SQLite's own record of each foreign key's ON DELETE rule (the DDL parser in
    SQLAlchemy misses lower-case spellings)."""
    rules: dict[tuple[str, str, tuple[str, ...]], str] = {}
    for table in tables:
        groups: dict[int, list[Any]] = {}
        for row in conn.exec_driver_sql(
            "SELECT * FROM pragma_foreign_key_list(?)", (table,)
        ).mappings():
            groups.setdefault(row["id"], []).append(row)
        for rows in groups.values():
            rows.sort(key=lambda r: r["seq"])
            cols = tuple(str(r["from"]) for r in rows)
            rules[(table, str(rows[0]["table"]), cols)] = str(rows[0]["on_delete"])
    return rules
