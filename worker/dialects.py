"""The few things PostgreSQL, MySQL/MariaDB and SQLite do differently for the engine:
row identity, key lists, lock timeouts, read-only transactions, subject locks and
deferred constraints. The fixed SQL snippets here take no user input."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog import MYSQL, POSTGRESQL, SQLITE, TableInfo
from worker.exceptions import SubjectLocked, UnsupportedTable

RowKind = Literal["key", "ctid", "rowid", "none"]


class _Tid(sa.types.UserDefinedType[str]):
    """PostgreSQL's physical row address type."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "tid"


def _ctid() -> ColumnElement[str]:
    return sa.literal_column("ctid", type_=_Tid())


def row_address() -> ColumnElement[str]:
    """PostgreSQL's physical address of a row (unique within one table, not across the
    partitions of a partitioned table)."""
    return _ctid()


def addressed_by(chosen: sa.Select[Any]) -> ColumnElement[bool]:
    """PostgreSQL: the rows whose address ``chosen`` selects, as
    ``ctid = ANY(ARRAY(SELECT ctid ...))`` (a TID scan)."""
    return row_address() == sa.any_(sa.func.array(chosen.scalar_subquery()))


#: The names SQLite answers to for a rowid table's row id; a column of the same name
#: hides one (``CREATE TABLE log (rowid INT, ...)``), so the first free one is used.
_SQLITE_ROWID_NAMES = ("rowid", "_rowid_", "oid")


def as_driver_gives(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """``column`` read and compared as the driver gives its values, without SQLAlchemy's
    conversions (MySQL, SQLite). Keys are read to be sent back: through those
    conversions a MySQL DOUBLE came back as a Decimal rounded to 10 places, a TIME as a
    time of day (no sign, no days), a SQLite DATETIME re-formatted, and the value sent
    back named another subject's row, or none. psycopg2 gives PostgreSQL's values as
    they are, and their types keep the arrays of ``= ANY``."""
    if dialect == POSTGRESQL:
        return column
    if isinstance(column.type, mysql.BIT):
        # A MySQL BIT comes as bytes, which it compares with as a string: as a number.
        return sa.type_coerce(column, _BitNumber())
    return sa.type_coerce(column, _DriverValue())


class _BitNumber(sa.types.TypeDecorator[int]):
    """A MySQL BIT value as the number it is, read and sent."""

    impl = sa.BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> int | None:
        return int.from_bytes(value, "big") if isinstance(value, bytes) else value


class _DriverValue(sa.types.UserDefinedType[Any]):
    """A value as the driver gives and takes it: no conversion either way, and (unlike
    ``NullType``) no type guessed from a parameter's Python value either (a MySQL TIME
    is a ``timedelta``, which SQLAlchemy would send as a date-time)."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        raise NotImplementedError("never in DDL")

    def bind_processor(self, dialect: sa.Dialect) -> None:
        return None

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> None:
        return None


def addressable(type_: sa.types.TypeEngine[Any], dialect: str = "") -> bool:
    """Whether a column's values can name rows: hashable and ordered in Python as in
    the database (not JSON, arrays or key-value maps)."""
    if isinstance(type_, sa.JSON | sa.ARRAY | postgresql.HSTORE):
        return False
    # MySQL's single-precision FLOAT is compared as a double: 0.1 stored is not 0.1.
    return not (dialect == MYSQL and isinstance(type_, mysql.FLOAT))


@dataclass(frozen=True)
class RowIdentity:
    """How the engine names one row of a table: its key, or the database's row address
    (``ctid`` on PostgreSQL, ``rowid`` on SQLite) for tables without one. On MySQL a
    table without any key is deleted with ``DELETE ... LIMIT`` (``kind == "none"``).

    On SQLite a rowid table's primary key may hold NULLs unless declared NOT NULL, and
    a NULL key names no row: such tables are walked by rowid too."""

    kind: RowKind
    columns: tuple[str, ...] = ()
    #: SQLite: the name the row id goes by in this table.
    alias: str = "rowid"
    #: The dialect, for keys read and sent back as the driver gives them.
    dialect: str = ""

    @classmethod
    def of(cls, info: TableInfo, dialect: str) -> RowIdentity:
        key = info.key_columns()
        if key and dialect == SQLITE and any(info.columns[c].nullable for c in key):
            key = None
        if key and not all(addressable(info.columns[c].type, dialect) for c in key):
            key = None  # jsonb, arrays: values the walk can neither sort nor set apart
        if key:
            return cls("key", key, dialect=dialect)
        if dialect == POSTGRESQL and not info.partitioned:
            return cls("ctid")
        if dialect == SQLITE:
            taken = {c.lower() for c in info.columns}
            for name in _SQLITE_ROWID_NAMES:
                if name not in taken:
                    return cls("rowid", alias=name)
            raise UnsupportedTable(
                str(info.name), "its columns hide every name of its rowid (rowid, _rowid_, oid)"
            )
        if dialect == POSTGRESQL:
            raise UnsupportedTable(str(info.name), "a partitioned table needs a primary key")
        return cls("none")

    def _rowid(self) -> ColumnElement[Any]:
        return sa.literal_column(self.alias)

    def _keys(self, table: sa.FromClause) -> list[ColumnElement[Any]]:
        return [as_driver_gives(table.c[c], self.dialect) for c in self.columns]

    def select_columns(self, table: sa.FromClause) -> list[ColumnElement[Any]]:
        if self.kind == "key":
            return self._keys(table)
        if self.kind == "ctid":
            return [sa.cast(_ctid(), sa.Text)]
        if self.kind == "rowid":
            return [self._rowid()]
        return []

    def sort_key(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        """Order keys as the database does (a ``ctid`` comes back as text '(page,item)')."""
        if self.kind == "ctid":
            page, _, item = str(value[0]).strip("()").partition(",")
            return (int(page), int(item))
        return value

    def order_by(self, table: sa.FromClause) -> list[ColumnElement[Any]]:
        if self.kind == "key":
            return [table.c[c] for c in self.columns]
        if self.kind == "ctid":
            return [_ctid()]
        if self.kind == "rowid":
            return [self._rowid()]
        return []

    def after(self, table: sa.FromClause, last: tuple[Any, ...]) -> ColumnElement[bool]:
        """Rows after ``last`` in key order (keyset pagination)."""
        if self.kind == "key":
            cols = self._keys(table)
            if len(cols) == 1:
                return cols[0] > sa.literal(last[0], cols[0].type)
            return sa.tuple_(*cols) > sa.tuple_(
                *[sa.literal(v, c.type) for v, c in zip(last, cols, strict=True)]
            )
        if self.kind == "ctid":
            return _ctid() > sa.cast(sa.literal(last[0], sa.Text), _Tid())
        return self._rowid() > sa.literal(last[0])

    def matches(
        self, table: sa.FromClause, values: Sequence[tuple[Any, ...]], dialect: str
    ) -> ColumnElement[bool]:
        """Rows whose identity is one of ``values``."""
        if self.kind == "key":
            return key_in([table.c[c] for c in self.columns], values, dialect)
        if self.kind == "ctid":
            return _ctid() == sa.any_(pg_array([v[0] for v in values], _Tid()))
        return self._rowid().in_([v[0] for v in values])


def key_in(
    columns: Sequence[ColumnElement[Any]], values: Sequence[tuple[Any, ...]], dialect: str
) -> ColumnElement[bool]:
    """``columns IN values``; on PostgreSQL one column becomes ``= ANY(array)``, a single
    parameter whatever the batch size."""
    columns = [as_driver_gives(c, dialect) for c in columns]
    if len(columns) == 1:
        col = columns[0]
        flat = [v[0] for v in values]
        if dialect == POSTGRESQL:
            return col == sa.any_(pg_array(flat, col.type))
        return col.in_(flat)
    return sa.tuple_(*columns).in_([tuple(v) for v in values])


def pg_array(values: Sequence[Any], element: sa.types.TypeEngine[Any]) -> ColumnElement[Any]:
    """A PostgreSQL array of ``values`` for ``= ANY(...)``, as one parameter.

    Integers, strings and row addresses go as one array literal, ``CAST('{1,2,3}' AS
    BIGINT[])``: the server reads it with the array type's input function. psycopg2
    would otherwise send a list as ``ARRAY[1,2,3]``, an expression of one constant per
    element, which for a 2,000-key batch costs about 2 ms of driver CPU and as much
    server parsing, on every statement (measured; the plan is the same). Integers are
    cast to BIGINT[], which compares with every integer column through the index, so a
    parent key wider than its referencing column cannot overflow the cast; strings to
    TEXT[], which ``varchar`` compares as. Anything else (``char(n)``, numerics, dates,
    enums, ...) is bound as the driver adapts it."""
    as_type: sa.types.TypeEngine[Any] | None = None
    text: Callable[[Any], str] | None = None
    if isinstance(element, sa.Integer) and not isinstance(element, sa.Enum):
        as_type, text = sa.BigInteger(), _int_element
    elif isinstance(element, _Tid):
        as_type, text = _Tid(), _quoted_element
    elif isinstance(element, sa.String) and not isinstance(element, (sa.CHAR, sa.NCHAR, sa.Enum)):
        as_type, text = sa.Text(), _quoted_element
    if as_type is not None and text is not None:
        literal: str | None = None
        if text is _int_element and set(map(type, values)) <= {int}:
            literal = "{" + ",".join(map(str, values)) + "}"  # the common case, at C speed
        else:
            with suppress(_NotLiteral):
                literal = "{" + ",".join(text(v) for v in values) + "}"
        if literal is not None:
            return sa.cast(sa.bindparam(None, literal, type_=sa.Text), postgresql.ARRAY(as_type))
    return sa.bindparam(None, list(values), type_=postgresql.ARRAY(element))


class _NotLiteral(Exception):
    """A value this array literal cannot carry as it is: bind the list instead."""


def _int_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if type(value) is not int:
        raise _NotLiteral()
    return str(value)


def _quoted_element(value: Any) -> str:
    """One element of an array literal: double-quoted, ``\\`` and ``"`` escaped."""
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        raise _NotLiteral()
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: MySQL/MariaDB: a parent row is still referenced / a referenced row is missing.
_MYSQL_FK_ERRORS = (1451, 1452)
#: SQLite's extended result code SQLITE_CONSTRAINT_FOREIGNKEY.
_SQLITE_FK_ERROR = 787


def is_foreign_key_violation(exc: sa.exc.DBAPIError) -> bool:
    """Whether a driver error is a foreign-key violation (by SQLSTATE or driver code)."""
    orig = exc.orig
    if getattr(orig, "pgcode", None) == "23503":
        return True
    if getattr(orig, "sqlite_errorcode", None) == _SQLITE_FK_ERROR:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _MYSQL_FK_ERRORS


def session_setup(conn: Connection, dialect: str, lock_timeout_ms: int) -> None:
    """Once per erasure connection: MySQL's lock wait is a session setting, in whole
    seconds (at least one). On PostgreSQL an erasure's counts and verification run
    without parallel workers: background work takes no more than its own backend's
    core from the service's traffic (a parallel count at the start of an erasure put
    the writes next to it behind two more busy processes on a 2-core server)."""
    if dialect == POSTGRESQL:
        conn.execute(sa.select(sa.func.set_config("max_parallel_workers_per_gather", "0", False)))
        conn.commit()
    if dialect == MYSQL:
        seconds = max(1, (int(lock_timeout_ms) + 999) // 1000)
        conn.execute(sa.text(f"SET SESSION innodb_lock_wait_timeout = {seconds}"))
        conn.commit()


def session_reset(conn: Connection, dialect: str) -> None:
    """Put back what ``session_setup`` changed, before the connection returns to its
    pool: the next user of a pooled connection gets the server's settings, not an
    erasure's one-second lock wait. A connection that cannot be reset is discarded."""
    if dialect not in (POSTGRESQL, MYSQL) or conn.closed or conn.invalidated:
        return
    try:
        if conn.in_transaction():
            conn.rollback()
        if dialect == POSTGRESQL:
            conn.execute(sa.text("RESET max_parallel_workers_per_gather"))
        else:
            conn.execute(sa.text("SET SESSION innodb_lock_wait_timeout = DEFAULT"))
        conn.commit()
    except sa.exc.DBAPIError:
        conn.invalidate()


@contextmanager
def erasure_session(conn: Connection, dialect: str, lock_timeout_ms: int) -> Iterator[None]:
    """``session_setup`` for the block, ``session_reset`` after it."""
    session_setup(conn, dialect, lock_timeout_ms)
    try:
        yield
    finally:
        session_reset(conn, dialect)


#: How an erasure's batches compress the full-page images they write to the WAL, where
#: the server does not compress them already (see ``wal_compression``).
WAL_COMPRESSION = "lz4"


@dataclass(frozen=True)
class WalCompression:
    """What an erasure's batches set ``wal_compression`` to ('' for nothing), and what
    compresses their full-page images in the end ('' for nothing)."""

    setting: str = ""
    in_effect: str = ""


def wal_compression(conn: Connection, dialect: str, wanted: bool) -> WalCompression:
    """PostgreSQL: whether the batches can compress the full-page images they write.

    An erasure rewrites nearly every page of the tables it walks, and the first change
    to a page after a checkpoint puts the whole page in the WAL: that is most of the
    WAL an erasure writes. With ``lz4`` it is about half (measured: 122 MB against
    223 MB for a million rows, at the same speed), which is WAL that the service's
    own commits no longer flush behind the erasure's, and that standbys and archives
    no longer receive. Each batch sets it for its own transaction only, where the
    server was built with lz4, does not compress already, and the role may set it (a
    superuser, or from PostgreSQL 15 a role granted ``SET ON PARAMETER
    wal_compression``); anywhere else the batches go as they are."""
    if dialect != POSTGRESQL:
        return WalCompression()
    current, choices = conn.execute(
        sa.text(
            "SELECT current_setting('wal_compression'), enumvals FROM pg_settings"
            " WHERE name = 'wal_compression'"
        )
    ).one()
    own = "" if current == "off" else ("pglz" if current == "on" else str(current))
    if own or not wanted or WAL_COMPRESSION not in (choices or ()):
        return WalCompression(in_effect=own)
    if cannot_set(conn, "wal_compression") is not None:
        return WalCompression()
    return WalCompression(WAL_COMPRESSION, WAL_COMPRESSION)


def begin_batch(
    conn: Connection,
    dialect: str,
    lock_timeout_ms: int,
    fast_commit: bool,
    checks_off: bool = False,
    compression: str = "",
) -> None:
    """Start one batch transaction: bound how long a statement waits for a row lock
    and, on PostgreSQL, optionally skip waiting for the WAL flush at commit, (with
    ``checks_off``) the per-row foreign-key triggers of this transaction's own
    statements and (with ``compression``) write its full-page images compressed, in
    one round trip."""
    if dialect == POSTGRESQL:
        settings = [
            sa.func.set_config("lock_timeout", f"{int(lock_timeout_ms)}ms", True),
            sa.func.set_config("synchronous_commit", "off" if fast_commit else "on", True),
        ]
        if checks_off:
            settings.append(sa.func.set_config("session_replication_role", "replica", True))
        if compression:
            settings.append(sa.func.set_config("wal_compression", compression, True))
        conn.execute(sa.select(*settings))


def may_switch_off_checks(conn: Connection, dialect: str) -> str | None:
    """Why this connection's role cannot turn its own foreign-key triggers off for a
    transaction (``None``: it can). PostgreSQL only."""
    if dialect != POSTGRESQL:
        return "only PostgreSQL has it"
    return cannot_set(conn, "session_replication_role")


def cannot_set(conn: Connection, parameter: str) -> str | None:
    """PostgreSQL: why this connection's role may not set the superuser-only
    ``parameter`` (``None``: it may): it must be a superuser or, from version 15, be
    granted ``SET ON PARAMETER`` for it."""
    row = conn.execute(
        sa.text(
            "SELECT r.rolsuper, current_setting('server_version_num')::int"
            " FROM pg_roles r WHERE r.rolname = current_user"
        )
    ).one()
    if row[0]:
        return None
    if row[1] < 150000:
        return "the role is not a superuser (PostgreSQL 15 can grant the setting alone)"
    granted = conn.execute(
        sa.text("SELECT has_parameter_privilege(:p, 'SET')"), {"p": parameter}
    ).scalar_one()
    if granted:
        return None
    return f"the role may not set {parameter} (GRANT SET ON PARAMETER)"


def checks_off_unsafe(conn: Connection, dialect: str) -> set[tuple[str, str]]:
    """PostgreSQL: tables (schema, name) whose rows must not be removed with this
    session's triggers off: those with rewrite rules on writes (replica mode skips
    them too), and, unless the role bypasses row-level security, those with it on (a
    policy could hide from Eraser's own look-ups rows the database's check sees)."""
    if dialect != POSTGRESQL:
        return set()
    rows = conn.execute(
        sa.text(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid"
            "   AND r.ev_type <> '1')"
            " OR (c.relrowsecurity AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles"
            "   WHERE rolname = current_user))"
        )
    )
    return {(str(s), str(t)) for s, t in rows}


def referencing_constraints(conn: Connection, dialect: str) -> dict[tuple[str, str], int]:
    """PostgreSQL: how many foreign keys in the whole database reference each table
    (schema, name), whichever schema they are declared in; partition clones aside."""
    if dialect != POSTGRESQL:
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT n.nspname, c.relname, count(*) FROM pg_constraint k"
            " JOIN pg_class c ON c.oid = k.confrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE k.contype = 'f' AND k.conparentid = 0 GROUP BY 1, 2"
        )
    )
    return {(str(s), str(t)): int(n) for s, t, n in rows}


def flush_commits(conn: Connection, dialect: str) -> None:
    """Make every earlier commit durable: on PostgreSQL a synchronous commit of a
    transaction that has an id flushes the WAL up to and including it."""
    if dialect == POSTGRESQL:
        with conn.begin():
            conn.execute(sa.text("SELECT txid_current()"))


def begin_read_only(conn: Connection, dialect: str) -> None:
    """Make the transaction that ``conn`` just began refuse every write."""
    if dialect in (POSTGRESQL, MYSQL):
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    else:
        conn.execute(sa.text("PRAGMA query_only = ON"))


def end_read_only(conn: Connection, dialect: str) -> None:
    if dialect == SQLITE:
        conn.execute(sa.text("PRAGMA query_only = OFF"))


def defer_constraints(conn: Connection, dialect: str) -> None:
    """Defer the current transaction's deferrable foreign-key checks to its commit."""
    if dialect == POSTGRESQL:
        conn.execute(sa.text("SET CONSTRAINTS ALL DEFERRED"))
    elif dialect == SQLITE:
        conn.execute(sa.text("PRAGMA defer_foreign_keys = ON"))


def lock_key(parts: Sequence[str]) -> tuple[int, str]:
    """A stable advisory-lock key (PostgreSQL bigint, MySQL name) that reveals nothing
    of the subject's value."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    number = int.from_bytes(digest[:8], "big", signed=True)
    return number, "eraser:" + digest[:16].hex()


@contextmanager
def subject_lock(
    engine: Engine, dialect: str, parts: Sequence[str], wait_seconds: float
) -> Iterator[None]:
    """Hold a per-subject lock in the target database for the whole erasure, so two
    erasures of one subject never interleave. SQLite serialises writers by itself."""
    if dialect == SQLITE:
        yield
        return
    number, name = lock_key(parts)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            if dialect == POSTGRESQL:
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": number})
            else:
                got = conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name})
            if got.scalar():
                break
            if time.monotonic() >= deadline:
                raise SubjectLocked(wait_seconds)
            time.sleep(0.05)
        try:
            yield
        finally:
            if dialect == POSTGRESQL:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": number})
            else:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        conn.close()
