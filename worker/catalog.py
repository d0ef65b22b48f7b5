"""Read a live database's catalog: tables, keys, foreign keys, indexes, triggers.

Everything the planner needs comes from here, and every SQL statement the engine
runs is built from the ``sqlalchemy.Table`` objects made here, so names such as
``"Order"`` or ``"order line"`` are always quoted by SQLAlchemy, never by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.exceptions import UnsupportedTable

POSTGRESQL = "postgresql"
MYSQL = "mysql"
SQLITE = "sqlite"
SUPPORTED_DIALECTS = (POSTGRESQL, MYSQL, SQLITE)

#: ``ON DELETE`` rules, spelled as the SQL standard does.
NO_ACTION = "NO ACTION"
RESTRICT = "RESTRICT"
CASCADE = "CASCADE"
SET_NULL = "SET NULL"
SET_DEFAULT = "SET DEFAULT"

_PG_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


@dataclass(frozen=True, order=True)
class TableName:
    """A schema-qualified table name; prints as ``schema.name``."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    name: str
    type: sa.types.TypeEngine[Any]
    nullable: bool


@dataclass(frozen=True)
class ForeignKey:
    """One foreign-key constraint, from the referencing (child) to the referenced table."""

    name: str | None
    child: TableName
    child_columns: tuple[str, ...]
    parent: TableName
    parent_columns: tuple[str, ...]
    on_delete: str = NO_ACTION
    deferrable: bool = False
    initially_deferred: bool = False
    validated: bool = True
    #: The referencing columns that accept NULL. Setting them to NULL clears the
    #: reference (a key with any NULL column references nothing: MATCH SIMPLE).
    clearable: tuple[str, ...] = ()

    @property
    def nullable(self) -> bool:
        """Whether the reference can be cleared by setting columns to NULL."""
        return bool(self.clearable)

    @property
    def is_self_reference(self) -> bool:
        return self.child == self.parent

    def describe(self) -> str:
        cols = ", ".join(self.child_columns)
        pcols = ", ".join(self.parent_columns)
        label = f"{self.name} " if self.name else ""
        return f"{label}{self.child}({cols}) -> {self.parent}({pcols})"


@dataclass(frozen=True)
class Index:
    name: str | None
    columns: tuple[str, ...]
    unique: bool


@dataclass(frozen=True)
class Trigger:
    name: str
    timing: str
    events: tuple[str, ...]


@dataclass
class TableInfo:
    """One reflected table and the SQLAlchemy ``Table`` that SQL is built from."""

    name: TableName
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    unique_keys: tuple[tuple[str, ...], ...]
    indexes: tuple[Index, ...]
    foreign_keys: tuple[ForeignKey, ...]
    table: sa.Table = field(repr=False, compare=False)
    triggers: tuple[Trigger, ...] = ()
    partitioned: bool = False
    #: MariaDB ``WITH SYSTEM VERSIONING``: old versions of rows stay in its history.
    system_versioned: bool = False
    #: PostgreSQL: other tables inherit from it (``INHERITS``, not partitions).
    inherited: bool = False
    #: PostgreSQL: columns whose equality is not byte equality (``citext``, or a
    #: nondeterministic collation): ``'a'`` equals ``'A'`` there.
    inexact: frozenset[str] = frozenset()
    #: PostgreSQL: rules (``CREATE RULE``) on its DELETE or UPDATE.
    rules: tuple[str, ...] = ()

    def key_columns(self) -> tuple[str, ...] | None:
        """Columns that identify one row: the primary key, else a NOT NULL unique key."""
        if self.primary_key:
            return self.primary_key
        for cols in self.unique_keys:
            if all(not self.columns[c].nullable for c in cols):
                return cols
        return None

    def has_index_on(self, columns: Sequence[str]) -> bool:
        """Whether some index (or key) starts with exactly these columns, in any order."""
        wanted = set(columns)
        candidates: list[tuple[str, ...]] = [self.primary_key, *self.unique_keys]
        candidates += [ix.columns for ix in self.indexes]
        return any(len(c) >= len(wanted) and set(c[: len(wanted)]) == wanted for c in candidates)

    @property
    def delete_triggers(self) -> tuple[Trigger, ...]:
        return tuple(t for t in self.triggers if "DELETE" in t.events)


@dataclass
class Catalog:
    """The reflected tables of one database, with their foreign-key graph."""

    dialect: str
    default_schema: str
    tables: dict[TableName, TableInfo]
    fingerprint: str = ""
    _incoming: dict[TableName, list[ForeignKey]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._incoming = {name: [] for name in self.tables}
        for info in self.tables.values():
            for fk in info.foreign_keys:
                if fk.parent in self._incoming:
                    self._incoming[fk.parent].append(fk)
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.tables.values())

    def incoming(self, parent: TableName) -> list[ForeignKey]:
        """Foreign keys that reference ``parent`` (its child edges)."""
        return self._incoming.get(parent, [])

    def with_foreign_keys(self, extra: Sequence[ForeignKey]) -> Catalog:
        """This catalog plus references the database does not declare (virtual foreign
        keys from the registry). The fingerprint stays the database's own."""
        if not extra:
            return self
        tables = dict(self.tables)
        for fk in extra:
            info = tables[fk.child]
            tables[fk.child] = replace(info, foreign_keys=(*info.foreign_keys, fk))
        return Catalog(self.dialect, self.default_schema, tables, self.fingerprint)

    def resolve(self, name: str) -> TableName:
        """Find a table by ``name`` or ``schema.name``; raises ``KeyError`` if unknown."""
        if "." in name:
            schema, _, bare = name.partition(".")
            candidate = TableName(schema, bare)
            if candidate in self.tables:
                return candidate
        matches = [t for t in self.tables if t.name == name]
        if len(matches) == 1:
            return matches[0]
        preferred = TableName(self.default_schema, name)
        if preferred in self.tables:
            return preferred
        raise KeyError(name)


def fingerprint(tables: Iterable[TableInfo]) -> str:
    """A stable hash of the schema facts a plan depends on."""
    doc = []
    for t in sorted(tables, key=lambda t: t.name):
        doc.append(
            {
                "table": str(t.name),
                "columns": [[c.name, str(c.type), c.nullable] for c in t.columns.values()],
                "pk": list(t.primary_key),
                "unique": sorted(list(u) for u in t.unique_keys),
                "indexes": sorted([list(i.columns), i.unique] for i in t.indexes),
                "fks": sorted(
                    [
                        list(fk.child_columns),
                        str(fk.parent),
                        list(fk.parent_columns),
                        fk.on_delete,
                        fk.deferrable,
                        fk.initially_deferred,
                        fk.validated,
                    ]
                    for fk in t.foreign_keys
                ),
                "triggers": sorted([tr.name, tr.timing, list(tr.events)] for tr in t.triggers),
                "partitioned": t.partitioned,
                # Only when set: the fingerprints of other schemas stay what they were.
                **({"system_versioned": True} if t.system_versioned else {}),
                **({"inherited": True} if t.inherited else {}),
            }
        )
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


_PG_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
)
#: Every catalog row behind a plan, summed: a DDL statement writes new row versions (a
#: new ``xmin``) or removes rows, which changes the count or the sums. Sums rather
#: than a hash of the sorted rows: no sort, no string building (it runs per task).
_PG_VERSION = """
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
_MYSQL_VERSION = """
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


def catalog_version_column(dialect: str, schemas: Sequence[str] | None) -> sa.ColumnElement[Any]:
    """``catalog_version`` as a scalar subquery, to read in another statement."""
    if dialect == SQLITE:
        query = sa.text("SELECT schema_version AS version FROM pragma_schema_version()")
    elif dialect == POSTGRESQL:
        if schemas:
            sql = _PG_VERSION.format(where="n.nspname = ANY(:schemas)")
            query = sa.text(sql).bindparams(schemas=list(schemas))
        else:
            query = sa.text(_PG_VERSION.format(where=_PG_USER_SCHEMAS))
    else:
        query = sa.text(_MYSQL_VERSION).bindparams(
            sa.bindparam("schemas", list(schemas or []), expanding=True)
        )
    sub = query.columns(sa.column("version")).subquery("catalog_version")
    return sa.select(sa.cast(sub.c.version, sa.String)).scalar_subquery()


def catalog_version(conn: Connection, dialect: str, schemas: Sequence[str] | None) -> str:
    """A cheap token that changes whenever the schema of ``schemas`` changes (one query
    instead of a reflection): PostgreSQL's catalog rows get a new ``xmin`` on every DDL,
    SQLite counts schema changes, and on MySQL the definitions are hashed. Used to keep a
    plan until the schema it was made from changes."""
    return str(conn.execute(sa.select(catalog_version_column(dialect, schemas))).scalar())


def dialect_name(engine: Engine | Connection) -> str:
    name = engine.dialect.name
    if name == "mariadb":
        return MYSQL
    return name


def reflect(engine: Engine, schemas: Sequence[str] | None = None) -> Catalog:
    """Read the catalog of ``schemas`` (default: every user schema the database has).

    On MySQL the default is the connection's database plus any database its foreign
    keys point into, so cross-database references are followed.
    """
    dialect = dialect_name(engine)
    if dialect not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported database dialect {engine.dialect.name!r}")
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        default_schema = inspector.default_schema_name or "main"
        if schemas:
            wanted = list(dict.fromkeys(schemas))
        elif dialect == POSTGRESQL:
            wanted = [
                s
                for s in inspector.get_schema_names()
                if s not in _PG_SYSTEM_SCHEMAS and not s.startswith(("pg_toast", "pg_temp"))
            ]
        else:
            wanted = [default_schema]
        tables: dict[TableName, TableInfo] = {}
        metadata = sa.MetaData()
        done: set[str] = set()
        while wanted:
            schema = wanted.pop(0)
            if schema in done:
                continue
            done.add(schema)
            with warnings.catch_warnings():
                # MySQL: a constraint SQLAlchemy cannot parse is dropped with this warning;
                # _mysql_check_foreign_keys refuses the schema instead.
                warnings.filterwarnings("ignore", "Unknown schema content", sa.exc.SAWarning)
                found = _reflect_schema(conn, inspector, metadata, dialect, schema, default_schema)
            tables.update(found)
            if dialect == MYSQL:
                _mysql_check_foreign_keys(conn, schema, found)
                _mysql_check_column_names(conn, schema, found)
            if dialect == MYSQL and not schemas:
                for info in found.values():
                    for fk in info.foreign_keys:
                        if fk.parent.schema not in done:
                            wanted.append(fk.parent.schema)
                # And the databases whose foreign keys point into this one: their rows
                # must be cleared (or refused) like any other reference.
                wanted.extend(s for s in _mysql_referencing_schemas(conn, schema) if s not in done)
        conn.rollback()
    return Catalog(dialect=dialect, default_schema=default_schema, tables=tables)


def _reflect_schema(
    conn: Connection,
    inspector: sa.Inspector,
    metadata: sa.MetaData,
    dialect: str,
    schema: str,
    default_schema: str,
) -> dict[TableName, TableInfo]:
    kind = sa.engine.reflection.ObjectKind.TABLE
    scope = sa.engine.reflection.ObjectScope.DEFAULT
    reflect_schema = None if dialect == SQLITE and schema == "main" else schema
    columns = inspector.get_multi_columns(schema=reflect_schema, kind=kind, scope=scope)
    pks = inspector.get_multi_pk_constraint(schema=reflect_schema, kind=kind, scope=scope)
    fks = inspector.get_multi_foreign_keys(schema=reflect_schema, kind=kind, scope=scope)
    uniques = inspector.get_multi_unique_constraints(schema=reflect_schema, kind=kind, scope=scope)
    indexes = inspector.get_multi_indexes(schema=reflect_schema, kind=kind, scope=scope)

    partitions: set[str] = set()
    partitioned: set[str] = set()
    validated: dict[tuple[str, str], bool] = {}
    parents: set[str] = set()
    inexact: dict[str, set[str]] = {}
    rules: dict[str, list[str]] = {}
    if dialect == POSTGRESQL:
        partitions, partitioned = _pg_partitions(conn, schema)
        validated = _pg_validated(conn, schema)
        parents = _pg_inheritance_parents(conn, schema)
        inexact, rules = _pg_inexact_columns_and_rules(conn, schema)
    triggers = _triggers(conn, dialect, schema)
    versioned = _mysql_system_versioned(conn, schema) if dialect == MYSQL else set()
    sqlite_rules = _sqlite_delete_rules(conn, [t for _, t in columns]) if dialect == SQLITE else {}

    result: dict[TableName, TableInfo] = {}
    for (_, tname), cols in columns.items():
        if tname in partitions or (dialect == SQLITE and tname.startswith("sqlite_")):
            continue
        name = TableName(schema, tname)
        colmap = {
            c["name"]: Column(c["name"], c["type"], bool(c.get("nullable", True))) for c in cols
        }
        pk_info: dict[str, Any] = dict(pks.get((reflect_schema, tname)) or {})
        pk = tuple(pk_info.get("constrained_columns") or ())
        ukeys = tuple(tuple(u["column_names"]) for u in uniques.get((reflect_schema, tname), []))
        ix = tuple(
            Index(i.get("name"), tuple(c for c in i["column_names"] if c), bool(i["unique"]))
            for i in indexes.get((reflect_schema, tname), [])
            if i.get("column_names") and all(i["column_names"]) and not _partial(i)
        )
        ukeys = ukeys + tuple(i.columns for i in ix if i.unique and i.columns not in ukeys)
        fklist = []
        for raw in fks.get((reflect_schema, tname), []):
            opts = raw.get("options") or {}
            parent_schema = raw.get("referred_schema") or (
                schema if dialect == SQLITE else default_schema
            )
            child_cols = tuple(raw["constrained_columns"])
            if not child_cols or any(c not in colmap for c in child_cols):
                # SQLAlchemy splits a column list on commas: a name holding one is lost.
                raise UnsupportedTable(
                    str(name),
                    f"its foreign key {raw.get('name')} could not be read from the schema",
                )
            rule, listed = _delete_rule(
                sqlite_rules.get((tname, raw["referred_table"], child_cols)) or opts.get("ondelete")
            )
            cleared = listed if listed is not None else child_cols
            fklist.append(
                ForeignKey(
                    name=raw.get("name"),
                    child=name,
                    child_columns=child_cols,
                    parent=TableName(parent_schema, raw["referred_table"]),
                    parent_columns=tuple(raw["referred_columns"]),
                    on_delete=rule,
                    deferrable=bool(opts.get("deferrable")),
                    initially_deferred=str(opts.get("initially") or "").upper() == "DEFERRED",
                    validated=validated.get((tname, raw.get("name") or ""), True),
                    clearable=tuple(
                        c for c in child_cols if c in cleared and c in colmap and colmap[c].nullable
                    ),
                )
            )
        result[name] = TableInfo(
            name=name,
            columns=colmap,
            primary_key=pk,
            unique_keys=ukeys,
            indexes=ix,
            foreign_keys=tuple(fklist),
            table=_build_table(metadata, name, colmap, pk),
            triggers=tuple(triggers.get(tname, ())),
            partitioned=tname in partitioned,
            system_versioned=tname in versioned,
            inherited=tname in parents,
            inexact=frozenset(inexact.get(tname, ())),
            rules=tuple(sorted(rules.get(tname, ()))),
        )
    return result


def _pg_inexact_columns_and_rules(
    conn: Connection, schema: str
) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """PostgreSQL: per table of ``schema``, the columns whose equality is not byte
    equality (``citext``, a domain over it, a nondeterministic collation), and the
    rules on its DELETE or UPDATE. One statement."""
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


def _mysql_check_foreign_keys(
    conn: Connection, schema: str, found: dict[TableName, TableInfo]
) -> None:
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


def _mysql_check_column_names(
    conn: Connection, schema: str, found: dict[TableName, TableInfo]
) -> None:
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


def _mysql_system_versioned(conn: Connection, schema: str) -> set[str]:
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


def _mysql_referencing_schemas(conn: Connection, schema: str) -> list[str]:
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


def _partial(index: Any) -> bool:
    """A partial index (``WHERE ...``): unique, if at all, only among some rows, and no
    help for look-ups over all of them."""
    options = index.get("dialect_options") or {}
    return bool(options.get("postgresql_where") or options.get("sqlite_where"))


_RULE_COLUMNS = re.compile(r"^(SET NULL|SET DEFAULT)\s*\((.*)\)$", re.IGNORECASE | re.DOTALL)


def _delete_rule(rule: object) -> tuple[str, tuple[str, ...] | None]:
    """An ON DELETE rule, and for PostgreSQL 15's ``SET NULL (col, ...)`` the columns it
    sets (None: all of the key's)."""
    text = str(rule or NO_ACTION).strip()
    listed = _RULE_COLUMNS.match(text)
    if listed is None:
        return _normalize_rule(text), None
    columns = tuple(_pg_identifier(c) for c in _PG_IDENTIFIER.findall(listed.group(2)))
    return _normalize_rule(listed.group(1)), columns


#: One identifier of a column list: quoted (doubled quotes inside) or plain.
_PG_IDENTIFIER = re.compile(r'"(?:[^"]|"")*"|[^\s,"]+')


def _pg_identifier(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text


def _normalize_rule(rule: object) -> str:
    text = str(rule or NO_ACTION).upper().strip()
    return text if text in (NO_ACTION, RESTRICT, CASCADE, SET_NULL, SET_DEFAULT) else NO_ACTION


def _sqlite_delete_rules(
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


def _pg_partitions(conn: Connection, schema: str) -> tuple[set[str], set[str]]:
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


def _pg_inheritance_parents(conn: Connection, schema: str) -> set[str]:
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


def _pg_validated(conn: Connection, schema: str) -> dict[tuple[str, str], bool]:
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


_PG_TRIGGER_EVENTS = ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))
_SQLITE_TRIGGER = re.compile(
    r"\b(BEFORE|AFTER|INSTEAD\s+OF)?\s*(DELETE|INSERT|UPDATE)\b", re.IGNORECASE
)


def _triggers(conn: Connection, dialect: str, schema: str) -> dict[str, list[Trigger]]:
    found: dict[str, list[Trigger]] = {}
    if dialect == POSTGRESQL:
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
            events = tuple(ev for bit, ev in _PG_TRIGGER_EVENTS if tgtype & bit)
            found.setdefault(table, []).append(Trigger(name, timing, events))
    elif dialect == MYSQL:
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
    else:
        rows = conn.execute(
            sa.text(
                "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
            )
        )
        for table, name, sql in rows:
            match = _SQLITE_TRIGGER.search(str(sql or "").split(" ON ", 1)[0])
            timing = (match.group(1) or "BEFORE").upper() if match else "BEFORE"
            event = match.group(2).upper() if match else "UNKNOWN"
            found.setdefault(table, []).append(Trigger(name, timing, (event,)))
    return found


def _build_table(
    metadata: sa.MetaData, name: TableName, columns: dict[str, Column], pk: tuple[str, ...]
) -> sa.Table:
    cols = [
        sa.Column(
            c.name, c.type, nullable=c.nullable, primary_key=c.name in pk, autoincrement=False
        )
        for c in columns.values()
    ]
    return sa.Table(name.name, metadata, *cols, schema=name.schema)
