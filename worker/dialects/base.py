"""What a database must tell the engine, and what most databases share.

The engine holds one ``Dialect`` object per database it works on (from
``worker.dialects.dialect_of``) and asks it instead of comparing names: catalog
reading, row identity and key lists, session setup, the statements around a locked
batch, subject locks, error classification and refusals. A database differs by
overriding a method or a capability flag; adding one means adding one module.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_types
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import TableInfo, TableName, Trigger
from worker.dialects.rows import RowIdentity
from worker.exceptions import SubjectLocked, UnsupportedTable


class ErrorClass(NamedTuple):
    """A driver error as its database names it: retryable or not, its code, and one
    line that is safe to store and show (no row values)."""

    transient: bool
    code: str
    description: str


@dataclass(frozen=True)
class WalCompression:
    """What an erasure's batches set ``wal_compression`` to ('' for nothing), and what
    compresses their full-page images in the end ('' for nothing)."""

    setting: str = ""
    in_effect: str = ""


@dataclass
class SchemaFacts:
    """What a database's own catalog says about one schema beyond what SQLAlchemy's
    inspector reads (each field empty where the database has no such thing)."""

    #: Partitions (left out: their partitioned table stands for them).
    partitions: set[str] = field(default_factory=set)
    #: Partitioned tables.
    partitioned: set[str] = field(default_factory=set)
    #: (table, constraint) -> whether the foreign key was validated.
    validated: dict[tuple[str, str], bool] = field(default_factory=dict)
    #: Tables other tables inherit from.
    inherited: set[str] = field(default_factory=set)
    #: Per table, columns whose equality is not byte equality.
    inexact: dict[str, set[str]] = field(default_factory=dict)
    #: Per table, rewrite rules on its DELETE or UPDATE.
    rules: dict[str, list[str]] = field(default_factory=dict)
    #: Per table, its triggers.
    triggers: dict[str, list[Trigger]] = field(default_factory=dict)
    #: System-versioned tables.
    versioned: set[str] = field(default_factory=set)
    #: (table, parent, child columns) -> the database's own ON DELETE rule.
    delete_rules: dict[tuple[str, str, tuple[str, ...]], str] = field(default_factory=dict)
    #: Per table, the columns an UPDATE sets to the current time unless it assigns them
    #: (MySQL's ``ON UPDATE CURRENT_TIMESTAMP``).
    stamped: dict[str, set[str]] = field(default_factory=dict)
    #: Every partition the database has, (schema, name) -> its partitioned root's: a
    #: reference into a partition is a reference into the root.
    partition_roots: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: Foreign keys declared on a partition of this schema itself (not cloned from its
    #: parent's), shaped as the inspector reads them, plus ``child_root`` (the root's
    #: (schema, name)) and ``validated``. The root's graph takes them.
    partition_keys: list[dict[str, Any]] = field(default_factory=list)


class Dialect:
    """One database family as the engine sees it. Subclasses set ``name`` and override
    what their database does differently; the defaults are the common SQL ways."""

    #: The name the catalog and plans carry (``Catalog.dialect``).
    name: str = ""
    #: Other names SQLAlchemy gives the same family (``mariadb``).
    aliases: tuple[str, ...] = ()

    # --- capabilities -------------------------------------------------------------------

    #: Row locks (``FOR UPDATE``) that a second connection can hold.
    row_locks: bool = True
    #: Some foreign-key checks can be deferred to the commit.
    defers_checks: bool = True
    #: Every foreign-key check can be deferred (not only those declared deferrable).
    defers_all_checks: bool = False
    #: Rows that reference each other can be deleted in one statement of
    #: data-modifying CTEs.
    writable_ctes: bool = False
    #: A leaf batch can be chosen and removed in one statement (by row address).
    one_statement_batches: bool = False
    #: A batch of a self-referencing table goes leaves first (foreign keys checked row
    #: by row, or a cascade that would remove a child mid-statement uncounted).
    self_references_leaves_first: bool = False
    #: A row whose NOT NULL self-reference points at itself cannot be deleted while
    #: the checks are on.
    blocks_self_pointing_rows: bool = False
    #: A multi-table cycle's membership can be unrolled in one statement (its CTEs
    #: computed once each); else its rows are found level by level
    #: (``worker.execution.cycle_members``).
    unrolls_cycles: bool = True
    #: Batches can run inside the server (``worker.execution.serverloop``).
    server_loop: bool = False
    #: Statements run for many subjects are prepared once per connection.
    prepares_statements: bool = False
    #: The default schemas are known before reflecting (MySQL's follow foreign keys).
    schemas_known_before_reflecting: bool = True

    # --- connections ----------------------------------------------------------------------

    def connect_args(self) -> dict[str, Any]:
        """Driver arguments for every connection (timeouts, an application name)."""
        return {}

    def configure(self, engine: Engine) -> None:
        """Per-connection setup hooked onto a freshly created engine."""

    def check_exists(self, url: URL) -> str | None:
        """Why a database to erase from is not there (``None``: it may be)."""
        return None

    # --- catalog reading --------------------------------------------------------------

    def version_query(self, schemas: Sequence[str] | None) -> sa.TextClause:
        """A one-row query of a ``version`` token that changes with any DDL in
        ``schemas``."""
        raise NotImplementedError

    def user_schemas(self, inspector: sa.Inspector, default_schema: str) -> list[str]:
        """The schemas read when none are named."""
        return [default_schema]

    def inspected_schema(self, schema: str) -> str | None:
        """The schema name to give SQLAlchemy's inspector."""
        return schema

    def system_table(self, name: str) -> bool:
        """A table of the database's own, never erased from."""
        return False

    def parent_schema(self, schema: str, default_schema: str) -> str:
        """The schema of a foreign key's parent when the key does not name one."""
        return default_schema

    def schema_facts(self, conn: Connection, schema: str, tables: Iterable[str]) -> SchemaFacts:
        """What the inspector does not read about ``schema`` (``tables`` are its tables)."""
        return SchemaFacts(triggers=self.triggers(conn, schema))

    def triggers(self, conn: Connection, schema: str) -> dict[str, list[Trigger]]:
        return {}

    def check_schema(
        self, conn: Connection, schema: str, found: dict[TableName, TableInfo]
    ) -> None:
        """Refuse a schema the reflection misread (``UnsupportedTable``)."""

    def related_schemas(
        self, conn: Connection, schema: str, found: dict[TableName, TableInfo]
    ) -> list[str]:
        """Other schemas to read when none were named: those that foreign keys of
        ``schema`` point into or come from."""
        return []

    # --- rows and keys ----------------------------------------------------------------

    def driver_value(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """``column`` read and compared as the driver gives its values, without
        SQLAlchemy's conversions. Keys are read to be sent back: through those
        conversions a value could come back changed and name another row, or none."""
        return sa.type_coerce(column, _DriverValue())

    def addressable(self, type_: sa.types.TypeEngine[Any]) -> bool:
        """Whether a column's values can name rows: hashable and ordered in Python as
        in the database (not JSON, arrays or key-value maps)."""
        return not isinstance(type_, sa.JSON | sa.ARRAY | pg_types.HSTORE)

    def row_identity(self, info: TableInfo) -> RowIdentity:
        """How the engine names one row of ``info``: its key, or what the database
        offers for tables without one."""
        key = self.usable_key(info)
        if key:
            return RowIdentity("key", self, key)
        return RowIdentity("none", self)

    def usable_key(self, info: TableInfo) -> tuple[str, ...] | None:
        key = info.key_columns()
        if key and not all(self.addressable(info.columns[c].type) for c in key):
            return None  # jsonb, arrays: values the walk can neither sort nor set apart
        return key

    def key_in(
        self, columns: Sequence[ColumnElement[Any]], values: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]:
        """``columns IN values``."""
        columns = [self.driver_value(c) for c in columns]
        if len(columns) == 1:
            return columns[0].in_([v[0] for v in values])
        return sa.tuple_(*columns).in_([tuple(v) for v in values])

    def exact_match(
        self,
        column: ColumnElement[Any],
        value: ColumnElement[Any],
        match: ColumnElement[bool],
        inexact: bool,
    ) -> ColumnElement[bool]:
        """``match`` (``column = value``) narrowed to the exact value where the
        database's comparison is looser than byte equality (``inexact``: the catalog
        says so of this column)."""
        return match

    # --- sessions and batches ---------------------------------------------------------

    def session_value(self, type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any] | None:
        """The subject's value for a column of ``type_`` as statements read it from
        their session (``bind_subject``), or None: it goes in a parameter."""
        return None

    def bind_subject(
        self, conn: Connection, values: Iterable[tuple[sa.types.TypeEngine[Any], Any]]
    ) -> None:
        """Give ``conn``'s session the subject's value for each column type, for the
        statements built with ``session_value``."""

    def session_setup(self, conn: Connection, lock_timeout_ms: int) -> None:
        """Once per erasure connection."""

    def session_reset(self, conn: Connection) -> None:
        """Put back what ``session_setup`` changed, before the connection returns to
        its pool. A connection that cannot be reset is discarded."""

    @contextmanager
    def erasure_session(self, conn: Connection, lock_timeout_ms: int) -> Iterator[None]:
        """``session_setup`` for the block, ``session_reset`` after it."""
        self.session_setup(conn, lock_timeout_ms)
        try:
            yield
        finally:
            self.session_reset(conn)

    def begin_batch(
        self,
        conn: Connection,
        lock_timeout_ms: int,
        fast_commit: bool,
        checks_off: bool = False,
        compression: str = "",
    ) -> None:
        """Start one batch transaction (bound its lock waits, and so on)."""

    @contextmanager
    def bounded_waits(self, conn: Connection, timeout_ms: int | None) -> Iterator[None]:
        """Bound how long each statement on ``conn`` (autocommit) may wait for a lock
        or run, for the block (None: as configured). Where the database has no such
        setting, the block runs as it would."""
        yield

    def begin_read_only(self, conn: Connection) -> None:
        """Make the transaction that ``conn`` just began refuse every write."""
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))

    def end_read_only(self, conn: Connection) -> None:
        """Undo what ``begin_read_only`` set beyond its transaction."""

    @contextmanager
    def bounded_reads(self, conn: Connection, seconds: int) -> Iterator[None]:
        """The block's statements are stopped by the server after ``seconds`` each
        (a shorter limit the session has already stays)."""
        yield

    def defer_constraints(self, conn: Connection) -> None:
        """Defer the current transaction's deferrable foreign-key checks to its commit."""

    @contextmanager
    def without_fk_checks(self, conn: Connection) -> Iterator[None]:
        """The block's statements run without foreign-key checks."""
        raise NotImplementedError(f"{self.name} has no such setting")
        yield  # pragma: no cover

    def flush_commits(self, conn: Connection) -> None:
        """Make every earlier commit durable."""

    def wal_compression(self, conn: Connection, wanted: bool) -> WalCompression:
        """Whether the batches can compress the full-page images they write."""
        return WalCompression()

    def reference_checks_refusal(self, conn: Connection) -> str | None:
        """Why Eraser may not check references itself on ``conn`` (``fk_checks``
        "eraser"), or None when it may."""
        return "only PostgreSQL has it"

    def checks_off_unsafe(self, conn: Connection) -> set[tuple[str, str]]:
        """Tables (schema, name) whose rows must not be removed with checks off."""
        return set()

    def referencing_constraints(self, conn: Connection) -> dict[tuple[str, str], int]:
        """How many foreign keys in the whole database reference each table."""
        return {}

    def unread_cascades(
        self, conn: Connection, read: Sequence[str]
    ) -> list[tuple[str, str, str, str]]:
        """Foreign keys declared outside the ``read`` schemas that would cascade, clear
        or reset rows there: (schema, table, constraint, its schema)."""
        return []

    # --- subject locks ----------------------------------------------------------------

    @contextmanager
    def subject_lock(
        self, engine: Engine, parts: Sequence[str], wait_seconds: float
    ) -> Iterator[None]:
        """Hold a per-subject lock in the target database for the whole erasure, so two
        erasures of one subject never interleave."""
        number, name = lock_key(parts)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            deadline = time.monotonic() + wait_seconds
            while not self.try_lock(conn, number, name):
                if time.monotonic() >= deadline:
                    raise SubjectLocked(wait_seconds)
                time.sleep(0.05)
            try:
                yield
            finally:
                self.unlock(conn, number, name)
        finally:
            conn.close()

    def try_lock(self, conn: Connection, number: int, name: str) -> bool:
        raise NotImplementedError

    def unlock(self, conn: Connection, number: int, name: str) -> None:
        raise NotImplementedError

    # --- errors -------------------------------------------------------------------------

    def classify_error(self, orig: object) -> ErrorClass | None:
        """A driver error of this database, classified (``None``: not one of its)."""
        return None

    def is_foreign_key_violation(self, exc: sa.exc.DBAPIError) -> bool:
        """Whether a driver error is a foreign-key violation."""
        return False

    def __repr__(self) -> str:
        return f"<dialect {self.name}>"


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


def lock_key(parts: Sequence[str]) -> tuple[int, str]:
    """A stable advisory-lock key (a bigint, a name) that reveals nothing of the
    subject's value."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    number = int.from_bytes(digest[:8], "big", signed=True)
    return number, "eraser:" + digest[:16].hex()


def unsupported(info: TableInfo, why: str) -> UnsupportedTable:
    return UnsupportedTable(str(info.name), why)


def reset_session(conn: Connection, statement: str) -> None:
    """Run ``statement`` (putting a session setting back) on a connection about to
    return to its pool; one that cannot be reset is discarded."""
    if conn.closed or conn.invalidated:
        return
    try:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(sa.text(statement))
        conn.commit()
    except sa.exc.DBAPIError:
        conn.invalidate()
