"""PostgreSQL: catalog reading, ``= ANY(array)`` keys, row addresses, session and batch
settings, advisory locks, and SQLSTATE classification."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from worker.catalog.model import TableInfo, Trigger
from worker.dialects import postgresql_session
from worker.dialects.base import (
    Dialect,
    ErrorClass,
    SchemaFacts,
    WalCompression,
    reset_session,
    unsupported,
)
from worker.dialects.postgresql_arrays import pg_array
from worker.dialects.rows import RowIdentity

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
)
#: Every catalog row behind a plan, summed: a DDL statement writes new row versions (a
#: new ``xmin``) or removes rows, which changes the count or the sums. Sums rather
#: than a hash of the sorted rows: no sort, no string building (it runs per task).
_VERSION = """
SELECT count(*) || ':' || coalesce(sum(o), 0) || ':' || coalesce(sum(x), 0) AS version FROM (
  SELECT c.oid::bigint, c.xmin::text::bigint FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {where} AND c.relkind IN ('r', 'p', 'i')
  UNION ALL
  SELECT a.attrelid::bigint * 1000 + a.attnum, a.xmin::text::bigint FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {where} AND c.relkind IN ('r', 'p') AND a.attnum > 0
  UNION ALL
  SELECT k.oid::bigint, k.xmin::text::bigint FROM pg_constraint k
    JOIN pg_namespace n ON n.oid = k.connamespace WHERE {where}
  UNION ALL
  SELECT t.oid::bigint, t.xmin::text::bigint FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {where}
) AS v(o, x)
"""
_TRIGGER_EVENTS = ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))

#: How an erasure's batches compress the full-page images they write to the WAL, where
#: the server does not compress them already (see ``wal_compression``).
WAL_COMPRESSION = "lz4"

#: SQLSTATEs (and classes, by their first two characters) worth retrying.
_TRANSIENT = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available (lock timeout)",
    "57014": "statement cancelled (statement timeout)",
    "57P01": "connection terminated by an administrator",
    "57P02": "server crash shutdown",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
    "53400": "configuration limit exceeded",
    "58000": "system error",
    "58030": "I/O error",
}
_TRANSIENT_CLASSES = {"08": "connection failure"}
_PERMANENT = {
    "42501": "permission denied",
    "42P01": "table does not exist",
    "42703": "column does not exist",
    "3D000": "database does not exist",
    "3F000": "schema does not exist",
    "28P01": "password authentication failed",
    "28000": "authorization rejected",
    "23503": "foreign-key violation",
    "25006": "read-only transaction",
}
#: Codes whose primary message names objects (tables, roles), never row values.
_MESSAGE_SAFE = {"42501", "42P01", "42703", "3F000", "55P03", "57P01", "40P01", "57014"}
_FK_VIOLATION = "23503"


class PostgreSQL(Dialect):
    name = "postgresql"
    writable_ctes = True
    one_statement_batches = True
    server_loop = True
    prepares_statements = True

    def connect_args(self) -> dict[str, Any]:
        return {"application_name": "eraser", "connect_timeout": 10}

    def configure(self, engine: Engine) -> None:
        # Whatever the driver: no subject's value stays in a pooled session, and none is
        # read from a session not given it (``postgresql_session``).
        event.listen(engine, "before_cursor_execute", postgresql_session.out_of_text, retval=True)
        event.listen(engine, "reset", postgresql_session.on_reset)
        if engine.driver != "psycopg2":
            return
        from worker.dialects import postgresql_infinity  # noqa: PLC0415 - needs psycopg2

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            postgresql_infinity.register(dbapi_connection)
            # A row-level security policy that would hide rows from this role makes the
            # statement fail (42501) instead of silently skipping the subject's hidden
            # rows and reporting them gone. (A SET, not a startup option: PgBouncer
            # refuses those it does not know.)
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SET row_security = off")
            finally:
                cursor.close()
            dbapi_connection.commit()

    # --- catalog reading --------------------------------------------------------------

    def version_query(self, schemas: Sequence[str] | None) -> sa.TextClause:
        if schemas:
            sql = _VERSION.format(where="n.nspname = ANY(:schemas)")
            return sa.text(sql).bindparams(schemas=list(schemas))
        return sa.text(_VERSION.format(where=_USER_SCHEMAS))

    def user_schemas(self, inspector: sa.Inspector, default_schema: str) -> list[str]:
        return [
            s
            for s in inspector.get_schema_names()
            if s not in _SYSTEM_SCHEMAS and not s.startswith(("pg_toast", "pg_temp"))
        ]

    def schema_facts(self, conn: Connection, schema: str, tables: Iterable[str]) -> SchemaFacts:
        partitions, partitioned = _partitions(conn, schema)
        inexact, rules = _inexact_columns_and_rules(conn, schema)
        return SchemaFacts(
            partitions=partitions,
            partitioned=partitioned,
            partition_roots=_partition_roots(conn) if partitions or partitioned else {},
            partition_keys=_partition_keys(conn, schema) if partitions else [],
            validated=_validated(conn, schema),
            inherited=_inheritance_parents(conn, schema),
            inexact=inexact,
            rules=rules,
            triggers=self.triggers(conn, schema),
        )

    def triggers(self, conn: Connection, schema: str) -> dict[str, list[Trigger]]:
        found: dict[str, list[Trigger]] = {}
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, t.tgname, t.tgtype FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE NOT t.tgisinternal AND n.nspname = :schema ORDER BY t.tgname"
            ),
            {"schema": schema},
        )
        for table, name, tgtype in rows:
            timing = "INSTEAD OF" if tgtype & 64 else ("BEFORE" if tgtype & 2 else "AFTER")
            events = tuple(ev for bit, ev in _TRIGGER_EVENTS if tgtype & bit)
            found.setdefault(table, []).append(Trigger(name, timing, events))
        return found

    # --- rows and keys ----------------------------------------------------------------

    def driver_value(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # psycopg2 gives PostgreSQL's values as they are, and their types keep the
        # arrays of ``= ANY``.
        return column

    def row_identity(self, info: TableInfo) -> RowIdentity:
        key = self.usable_key(info)
        if key:
            return RowIdentity("key", self, key)
        if info.partitioned:
            raise unsupported(info, "a partitioned table needs a primary key")
        return RowIdentity("ctid", self)

    def key_in(
        self, columns: Sequence[ColumnElement[Any]], values: Sequence[tuple[Any, ...]]
    ) -> ColumnElement[bool]:
        """One column becomes ``= ANY(array)``, a single parameter whatever the batch
        size."""
        if len(columns) == 1:
            col = columns[0]
            return col == sa.any_(pg_array([v[0] for v in values], col.type))
        varying = _varying_columns(values)
        if values and varying is not None and len(varying) == 1:
            # A composite key whose other columns hold one value in this batch (a
            # table partitioned by tenant, keyed (tenant_id, id)): ``tenant_id = t AND
            # id = ANY(array)``. A list of row values costs the planner about 0.4 ms a
            # key on a partitioned table; this form does not grow with the batch.
            (i,) = varying
            fixed = [
                Dialect.key_in(self, [c], [(values[0][j],)])
                for j, c in enumerate(columns)
                if j != i
            ]
            return sa.and_(*fixed, self.key_in([columns[i]], [(v[i],) for v in values]))
        return super().key_in(columns, values)

    def exact_match(
        self,
        column: ColumnElement[Any],
        value: ColumnElement[Any],
        match: ColumnElement[bool],
        inexact: bool,
    ) -> ColumnElement[bool]:
        if not inexact:
            return match
        # citext or a nondeterministic collation: 'acme' equals 'ACME' there. The
        # indexed comparison stays; a byte-wise one is added.
        exact = sa.cast(column, sa.Text()).collate("C")
        return sa.and_(match, exact == sa.cast(value, sa.Text()).collate("C"))

    # --- sessions and batches ---------------------------------------------------------

    def session_value(self, type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any] | None:
        """Integers, exact text types, uuid, numeric and bytea: out of the statement's
        text (``postgresql_session``); other types go in parameters."""
        return postgresql_session.session_value(type_)

    def bind_subject(
        self, conn: Connection, values: Iterable[tuple[sa.types.TypeEngine[Any], Any]]
    ) -> None:
        postgresql_session.bind(conn, values)

    def session_setup(self, conn: Connection, lock_timeout_ms: int) -> None:
        """An erasure's counts and verification run without parallel workers:
        background work takes no more than its own backend's core from the service's
        traffic."""
        conn.execute(sa.select(sa.func.set_config("max_parallel_workers_per_gather", "0", False)))
        conn.commit()

    @contextmanager
    def bounded_reads(self, conn: Connection, seconds: int) -> Iterator[None]:
        """``statement_timeout`` for the rest of the transaction (``SET LOCAL``), where
        the session has none."""
        if conn.execute(sa.text("SHOW statement_timeout")).scalar_one() in ("0", "0ms"):
            conn.execute(sa.select(sa.func.set_config("statement_timeout", f"{seconds}s", True)))
        yield

    def session_reset(self, conn: Connection) -> None:
        reset_session(conn, "RESET max_parallel_workers_per_gather")

    @contextmanager
    def bounded_waits(self, conn: Connection, timeout_ms: int | None) -> Iterator[None]:
        """``lock_timeout`` and ``statement_timeout`` for the block, then back to the
        session's defaults."""
        if timeout_ms is None:
            yield
            return
        bound = f"{int(timeout_ms)}ms"
        conn.execute(
            sa.select(
                sa.func.set_config("lock_timeout", bound, False),
                sa.func.set_config("statement_timeout", bound, False),
            )
        )
        try:
            yield
        finally:
            if not conn.invalidated:
                conn.exec_driver_sql("RESET lock_timeout")
                conn.exec_driver_sql("RESET statement_timeout")

    def begin_batch(
        self,
        conn: Connection,
        lock_timeout_ms: int,
        fast_commit: bool,
        checks_off: bool = False,
        compression: str = "",
    ) -> None:
        """Bound how long a statement waits for a row lock, optionally skip waiting for
        the WAL flush at commit, (with ``checks_off``) the per-row foreign-key triggers
        of this transaction's own statements and (with ``compression``) write its
        full-page images compressed, in one round trip."""
        settings = [
            sa.func.set_config("lock_timeout", f"{int(lock_timeout_ms)}ms", True),
            sa.func.set_config("synchronous_commit", "off" if fast_commit else "on", True),
        ]
        if checks_off:
            settings.append(sa.func.set_config("session_replication_role", "replica", True))
        if compression:
            settings.append(sa.func.set_config("wal_compression", compression, True))
        conn.execute(sa.select(*settings))

    def defer_constraints(self, conn: Connection) -> None:
        conn.execute(sa.text("SET CONSTRAINTS ALL DEFERRED"))

    def flush_commits(self, conn: Connection) -> None:
        """A synchronous commit of a transaction that has an id flushes the WAL up to
        and including it."""
        with conn.begin():
            conn.execute(sa.text("SELECT txid_current()"))

    def wal_compression(self, conn: Connection, wanted: bool) -> WalCompression:
        """Each batch sets ``wal_compression`` for its own transaction only, where the
        server was built with lz4, does not compress already, and the role may set it;
        anywhere else the batches go as they are (why: docs/design/engine-notes.md)."""
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

    def reference_checks_refusal(self, conn: Connection) -> str | None:
        refusal = cannot_set(conn, "session_replication_role")
        if refusal is not None:
            return refusal
        level = conn.execute(
            sa.text("SELECT current_setting('transaction_isolation')")
        ).scalar_one()
        if level != "read committed":
            # Each statement after the batch's DELETE must see rows committed meanwhile;
            # a transaction snapshot would hide a writer the DELETE waited for.
            return f"the connection's transactions are {level}, not read committed"
        return None

    def checks_off_unsafe(self, conn: Connection) -> set[tuple[str, str]]:
        """Tables with rewrite rules on writes (replica mode skips them too), and,
        unless the role bypasses row-level security, those with it on (a policy could
        hide from Eraser's own look-ups rows the database's check sees)."""
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

    def referencing_constraints(self, conn: Connection) -> dict[tuple[str, str], int]:
        """Whichever schema they are declared in; partition clones aside."""
        rows = conn.execute(
            sa.text(
                "SELECT n.nspname, c.relname, count(*) FROM pg_constraint k"
                " JOIN pg_class c ON c.oid = k.confrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE k.contype = 'f' AND k.conparentid = 0 GROUP BY 1, 2"
            )
        )
        return {(str(s), str(t)): int(n) for s, t, n in rows}

    def unread_cascades(
        self, conn: Connection, read: Sequence[str]
    ) -> list[tuple[str, str, str, str]]:
        rows = conn.execute(
            sa.text(
                "SELECT pn.nspname, p.relname, k.conname, cn.nspname FROM pg_constraint k"
                " JOIN pg_class p ON p.oid = k.confrelid"
                " JOIN pg_namespace pn ON pn.oid = p.relnamespace"
                " JOIN pg_class c ON c.oid = k.conrelid"
                " JOIN pg_namespace cn ON cn.oid = c.relnamespace"
                " WHERE k.contype = 'f' AND k.conparentid = 0 AND k.confdeltype IN ('c', 'n', 'd')"
                " AND cn.nspname <> ALL(:read) ORDER BY 1, 2, 3"
            ),
            {"read": sorted(read)},
        )
        return [(str(s), str(t), str(k), str(o)) for s, t, k, o in rows]

    # --- subject locks ----------------------------------------------------------------

    def try_lock(self, conn: Connection, number: int, name: str) -> bool:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": number})
        return bool(got.scalar())

    def unlock(self, conn: Connection, number: int, name: str) -> None:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": number})

    # --- errors -------------------------------------------------------------------------

    def classify_error(self, orig: object) -> ErrorClass | None:
        code = getattr(orig, "pgcode", None)
        if not isinstance(code, str) or not code:
            return None
        label = _TRANSIENT.get(code) or _TRANSIENT_CLASSES.get(code[:2])
        transient = label is not None
        if label is None:
            label = _PERMANENT.get(code, f"database error {type(orig).__name__}")
        text = f"{label} (SQLSTATE {code})"
        if code in _MESSAGE_SAFE:
            primary = getattr(getattr(orig, "diag", None), "message_primary", None)
            if primary:
                text = f"{text}: {primary.strip().splitlines()[0]}"
        return ErrorClass(transient, code, text)

    def is_foreign_key_violation(self, exc: sa.exc.DBAPIError) -> bool:
        return getattr(exc.orig, "pgcode", None) == _FK_VIOLATION


def cannot_set(conn: Connection, parameter: str) -> str | None:
    """Why this connection's role may not set the superuser-only ``parameter``
    (``None``: it may): it must be a superuser or, from version 15, be granted ``SET
    ON PARAMETER`` for it."""
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


def _inexact_columns_and_rules(
    conn: Connection, schema: str
) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Per table of ``schema``, the columns whose equality is not byte equality
    (``citext``, a domain over it, a nondeterministic collation), and the rules on its
    DELETE or UPDATE. One statement."""
    rows = conn.execute(
        sa.text(
            "SELECT 'column', c.relname, a.attname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_type b ON b.oid = t.typbasetype"
            " LEFT JOIN pg_collation co ON co.oid = a.attcollation"
            " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
            " AND a.attnum > 0 AND NOT a.attisdropped"
            " AND (t.typname = 'citext' OR b.typname = 'citext'"
            "  OR NOT coalesce((to_jsonb(co) ->> 'collisdeterministic')::bool, true))"
            " UNION ALL"
            " SELECT 'rule', c.relname, r.rulename FROM pg_rewrite r"
            " JOIN pg_class c ON c.oid = r.ev_class"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND r.ev_type IN ('2', '4')"
        ),
        {"schema": schema},
    ).all()
    inexact: dict[str, set[str]] = {}
    rules: dict[str, list[str]] = {}
    for kind, table, name in rows:
        if kind == "column":
            inexact.setdefault(str(table), set()).add(str(name))
        else:
            rules.setdefault(str(table), []).append(str(name))
    return inexact, rules


def _partitions(conn: Connection, schema: str) -> tuple[set[str], set[str]]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, c.relkind, c.relispartition FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
        ),
        {"schema": schema},
    )
    partitions: set[str] = set()
    partitioned: set[str] = set()
    for relname, relkind, is_partition in rows:
        if is_partition:
            partitions.add(relname)
        if relkind == "p":
            partitioned.add(relname)
    return partitions, partitioned


def _partition_roots(conn: Connection) -> dict[tuple[str, str], tuple[str, str]]:
    """Every partition of the database, (schema, name) -> its root's (schema, name)."""
    rows = conn.execute(
        sa.text(
            "SELECT n.nspname, c.relname, rn.nspname, r.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_class r ON r.oid = pg_partition_root(c.oid)"
            " JOIN pg_namespace rn ON rn.oid = r.relnamespace"
            " WHERE c.relispartition AND c.relkind IN ('r', 'p')"
        )
    )
    return {(str(s), str(t)): (str(rs), str(rt)) for s, t, rs, rt in rows}


#: ``pg_constraint.confdeltype`` -> the ON DELETE rule.
_DELETE_RULES = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL"}
_DELETE_RULES["d"] = "SET DEFAULT"

#: Foreign keys declared on a partition itself (``conparentid = 0``: not a clone of a
#: key its partitioned parent declares), with their columns in key order. The columns
#: a ``SET NULL (col, ...)`` sets are read through ``to_jsonb`` so that versions before
#: 15, which lack ``confdelsetcols``, read none.
_PARTITION_KEYS = """
SELECT rn.nspname, r.relname, k.conname, k.confdeltype, k.condeferrable, k.condeferred,
  k.convalidated, pn.nspname, p.relname,
  ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
    JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
  ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
    JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
  ARRAY(SELECT a.attname::text
    FROM jsonb_array_elements_text(CASE jsonb_typeof(to_jsonb(k) -> 'confdelsetcols')
      WHEN 'array' THEN to_jsonb(k) -> 'confdelsetcols' ELSE '[]' END) u(n)
    JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n::int)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_class p ON p.oid = k.confrelid
JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0 AND c.relispartition AND n.nspname = :schema
ORDER BY r.relname, k.conname
"""


def _partition_keys(conn: Connection, schema: str) -> list[dict[str, Any]]:
    """The foreign keys declared on the partitions of ``schema`` (see SchemaFacts)."""
    found: list[dict[str, Any]] = []
    rows = conn.execute(sa.text(_PARTITION_KEYS), {"schema": schema})
    for root_schema, root, name, rule, deferrable, deferred, validated, *rest in rows:
        parent_schema, parent, columns, parent_columns, set_columns = rest
        ondelete = _DELETE_RULES.get(str(rule), "NO ACTION")
        if set_columns:
            quoted = ", ".join('"' + str(c).replace('"', '""') + '"' for c in set_columns)
            ondelete = f"{ondelete} ({quoted})"
        found.append(
            {
                "name": str(name),
                "constrained_columns": [str(c) for c in columns],
                "referred_schema": str(parent_schema),
                "referred_table": str(parent),
                "referred_columns": [str(c) for c in parent_columns],
                "options": {
                    "ondelete": ondelete,
                    "deferrable": bool(deferrable),
                    "initially": "DEFERRED" if deferred else "IMMEDIATE",
                },
                "child_root": (str(root_schema), str(root)),
                "validated": bool(validated),
            }
        )
    return found


def _inheritance_parents(conn: Connection, schema: str) -> set[str]:
    """Plain tables of ``schema`` that other tables inherit from."""
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relkind = 'r'"
        ),
        {"schema": schema},
    )
    return {str(r[0]) for r in rows}


def _validated(conn: Connection, schema: str) -> dict[tuple[str, str], bool]:
    rows = conn.execute(
        sa.text(
            "SELECT cl.relname, con.conname, con.convalidated FROM pg_constraint con "
            "JOIN pg_class cl ON cl.oid = con.conrelid "
            "JOIN pg_namespace n ON n.oid = cl.relnamespace "
            "WHERE con.contype = 'f' AND n.nspname = :schema"
        ),
        {"schema": schema},
    )
    return {(r[0], r[1]): bool(r[2]) for r in rows}


def _varying_columns(values: Sequence[tuple[Any, ...]]) -> list[int] | None:
    """The positions whose value differs between the tuples of ``values`` (None when a
    value cannot be compared so: unhashable)."""
    if not values:
        return []
    try:
        return [i for i in range(len(values[0])) if len({v[i] for v in values}) > 1]
    except TypeError:
        return None
