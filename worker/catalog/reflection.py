"""Read a live database's catalog: tables, keys, foreign keys, indexes, triggers.

SQLAlchemy's inspector reads what every database has; the dialect adds what only its
database records (partitions, rules, triggers, system versioning) and refuses what the
inspector misread.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.catalog.fingerprint import fingerprint
from worker.catalog.model import (
    CASCADE,
    NO_ACTION,
    RESTRICT,
    SET_DEFAULT,
    SET_NULL,
    Catalog,
    Column,
    ForeignKey,
    Index,
    TableInfo,
    TableName,
)
from worker.catalog.partitions import partition_schemes
from worker.dialects import dialect_of
from worker.dialects.base import Dialect, SchemaFacts
from worker.exceptions import UnsupportedTable

#: Eraser's own table in a target database (``worker.execution.ledger``): never part
#: of a catalog, so plans, dry runs and fingerprints do not see it.
LEDGER_TABLE = "eraser_ledger"


def reflect(engine: Engine, schemas: Sequence[str] | None = None) -> Catalog:
    """Read the catalog of ``schemas`` (default: every user schema the database has).

    On MySQL the default is the connection's database plus any database its foreign
    keys point into, so cross-database references are followed.
    """
    dialect = dialect_of(engine)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        default_schema = inspector.default_schema_name or "main"
        if schemas:
            wanted = list(dict.fromkeys(schemas))
        else:
            wanted = dialect.user_schemas(inspector, default_schema)
        tables: dict[TableName, TableInfo] = {}
        partitions = SchemaFacts()
        metadata = sa.MetaData()
        done: set[str] = set()
        while wanted:
            schema = wanted.pop(0)
            if schema in done:
                continue
            done.add(schema)
            with warnings.catch_warnings():
                # MySQL: a constraint SQLAlchemy cannot parse is dropped with this warning;
                # the dialect's check_schema refuses the schema instead.
                warnings.filterwarnings("ignore", "Unknown schema content", sa.exc.SAWarning)
                found, facts = _reflect_schema(
                    conn, inspector, metadata, dialect, schema, default_schema
                )
            tables.update(found)
            partitions.partition_roots.update(facts.partition_roots)
            partitions.partition_keys.extend(facts.partition_keys)
            dialect.check_schema(conn, schema, found)
            if not schemas:
                wanted.extend(
                    s for s in dialect.related_schemas(conn, schema, found) if s not in done
                )
        conn.rollback()
    if partitions.partition_roots:
        tables = _fold_partitions(tables, partitions)
    return Catalog(dialect.name, default_schema, tables, fingerprint(tables.values()))


def _reflect_schema(
    conn: Connection,
    inspector: sa.Inspector,
    metadata: sa.MetaData,
    dialect: Dialect,
    schema: str,
    default_schema: str,
) -> tuple[dict[TableName, TableInfo], SchemaFacts]:
    kind = sa.engine.reflection.ObjectKind.TABLE
    scope = sa.engine.reflection.ObjectScope.DEFAULT
    inspected = dialect.inspected_schema(schema)
    columns = inspector.get_multi_columns(schema=inspected, kind=kind, scope=scope)
    pks = inspector.get_multi_pk_constraint(schema=inspected, kind=kind, scope=scope)
    fks = inspector.get_multi_foreign_keys(schema=inspected, kind=kind, scope=scope)
    uniques = inspector.get_multi_unique_constraints(schema=inspected, kind=kind, scope=scope)
    indexes = inspector.get_multi_indexes(schema=inspected, kind=kind, scope=scope)
    facts = dialect.schema_facts(conn, schema, [t for _, t in columns])
    schemes = partition_schemes(conn, dialect.name, schema)

    result: dict[TableName, TableInfo] = {}
    for (_, tname), cols in columns.items():
        ours = tname == LEDGER_TABLE and schema == default_schema  # (only where it is made)
        if tname in facts.partitions or dialect.system_table(tname) or ours:
            continue
        name = TableName(schema, tname)
        colmap = {
            c["name"]: Column(c["name"], c["type"], bool(c.get("nullable", True))) for c in cols
        }
        pk_info: dict[str, Any] = dict(pks.get((inspected, tname)) or {})
        pk = tuple(pk_info.get("constrained_columns") or ())
        ukeys = tuple(tuple(u["column_names"]) for u in uniques.get((inspected, tname), []))
        ix = tuple(
            Index(i.get("name"), tuple(c for c in i["column_names"] if c), bool(i["unique"]))
            for i in indexes.get((inspected, tname), [])
            if i.get("column_names") and all(i["column_names"]) and not _partial(i)
        )
        ukeys = ukeys + tuple(i.columns for i in ix if i.unique and i.columns not in ukeys)
        parent_schema = dialect.parent_schema(schema, default_schema)
        fklist = [
            _foreign_key(raw, name, colmap, parent_schema, facts)
            for raw in fks.get((inspected, tname), [])
        ]
        result[name] = TableInfo(
            name=name,
            columns=colmap,
            primary_key=pk,
            unique_keys=ukeys,
            indexes=ix,
            foreign_keys=tuple(fklist),
            table=_build_table(metadata, name, colmap, pk),
            triggers=tuple(facts.triggers.get(tname, ())),
            partitioned=tname in facts.partitioned,
            partition_scheme=schemes.get(tname),
            system_versioned=tname in facts.versioned,
            inherited=tname in facts.inherited,
            inexact=frozenset(facts.inexact.get(tname, ())),
            rules=tuple(sorted(facts.rules.get(tname, ()))),
            stamped=tuple(sorted(facts.stamped.get(tname, ()))),
        )
    return result, facts


def _fold_partitions(
    tables: dict[TableName, TableInfo], partitions: SchemaFacts
) -> dict[TableName, TableInfo]:
    """Each partitioned table with the foreign keys declared on its partitions, and
    every reference into a partition made a reference into its root.

    Schemas that predate parent-level keys (or were built by partition managers)
    declare their keys on each partition; the partitions stand behind their root in
    the catalog, so the root's graph must carry them for planning, counting and the
    cross-subject checks to go through them. The same key declared on several
    partitions (or cloned from the parent's) is one edge.
    """
    roots = {
        TableName(*part): TableName(*root) for part, root in partitions.partition_roots.items()
    }
    declared: dict[TableName, list[ForeignKey]] = {}
    for raw in partitions.partition_keys:
        root = TableName(*raw["child_root"])
        if root in tables:
            fk = _foreign_key(raw, root, tables[root].columns, root.schema, SchemaFacts())
            declared.setdefault(root, []).append(fk)
    folded: dict[TableName, TableInfo] = {}
    for name, info in tables.items():
        keys: dict[tuple[object, ...], ForeignKey] = {}
        for fk in (*info.foreign_keys, *declared.get(name, ())):
            parent = roots.get(fk.parent, fk.parent)
            edge = (fk.child_columns, parent, fk.parent_columns)
            keys.setdefault(edge, replace(fk, parent=parent) if parent != fk.parent else fk)
        unchanged = tuple(keys.values()) == info.foreign_keys
        folded[name] = info if unchanged else replace(info, foreign_keys=tuple(keys.values()))
    return folded


def _foreign_key(
    raw: Any, name: TableName, colmap: dict[str, Column], parent_schema: str, facts: SchemaFacts
) -> ForeignKey:
    opts = raw.get("options") or {}
    child_cols = tuple(raw["constrained_columns"])
    if not child_cols or any(c not in colmap for c in child_cols):
        # SQLAlchemy splits a column list on commas: a name holding one is lost.
        raise UnsupportedTable(
            str(name),
            f"its foreign key {raw.get('name')} could not be read from the schema",
        )
    rule, listed = _delete_rule(
        facts.delete_rules.get((name.name, raw["referred_table"], child_cols))
        or opts.get("ondelete")
    )
    cleared = listed if listed is not None else child_cols
    return ForeignKey(
        name=raw.get("name"),
        child=name,
        child_columns=child_cols,
        parent=TableName(raw.get("referred_schema") or parent_schema, raw["referred_table"]),
        parent_columns=tuple(raw["referred_columns"]),
        on_delete=rule,
        deferrable=bool(opts.get("deferrable")),
        initially_deferred=str(opts.get("initially") or "").upper() == "DEFERRED",
        validated=raw.get(
            "validated", facts.validated.get((name.name, raw.get("name") or ""), True)
        ),
        clearable=tuple(
            c for c in child_cols if c in cleared and c in colmap and colmap[c].nullable
        ),
    )


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
    columns = tuple(_identifier(c) for c in _IDENTIFIER.findall(listed.group(2)))
    return _normalize_rule(listed.group(1)), columns


#: One identifier of a column list: quoted (doubled quotes inside) or plain.
_IDENTIFIER = re.compile(r'"(?:[^"]|"")*"|[^\s,"]+')


def _identifier(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text


def _normalize_rule(rule: object) -> str:
    text = str(rule or NO_ACTION).upper().strip()
    return text if text in (NO_ACTION, RESTRICT, CASCADE, SET_NULL, SET_DEFAULT) else NO_ACTION


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
