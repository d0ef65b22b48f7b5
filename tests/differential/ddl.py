"""A generated case written out as SQL for one engine: tables, keys, indexes,
partitions, the audit trigger, the rows, and the statements that drop it all again.

``oracle=True`` writes the twin the oracle runs in: every NO ACTION / RESTRICT key
becomes ``ON DELETE CASCADE`` (SET NULL and CASCADE are kept), nothing else changes.
The SQL is plain text with integer literals only, so a failing example can be
replayed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.differential.schemas import (
    BLOCKING,
    CASCADE,
    MAX_TABLES,
    MYSQL,
    PARTITION_SPLIT,
    POSTGRESQL,
    SQLITE,
    Case,
    ForeignKeySpec,
    Row,
    TableSpec,
)

AUDIT = "audit_log"


@dataclass(frozen=True)
class Schemas:
    """The two schema names of a target database (SQLite has only ``main``)."""

    main: str
    other: str | None


def quote(backend: str, name: str) -> str:
    return f"`{name}`" if backend == MYSQL else f'"{name}"'


def qualified(case: Case, schemas: Schemas, spec: TableSpec) -> str:
    if case.backend == SQLITE:
        return quote(SQLITE, spec.name)
    schema = schemas.other if spec.other_schema and schemas.other else schemas.main
    return f"{quote(case.backend, schema)}.{quote(case.backend, spec.name)}"


def _audit(case: Case, schemas: Schemas) -> str:
    if case.backend == SQLITE:
        return quote(SQLITE, AUDIT)
    return f"{quote(case.backend, schemas.main)}.{quote(case.backend, AUDIT)}"


def _fk_clause(case: Case, schemas: Schemas, fk: ForeignKeySpec, oracle: bool) -> str:
    q = case.backend
    rule = CASCADE if oracle and fk.on_delete in BLOCKING else fk.on_delete
    text = (
        f"FOREIGN KEY ({', '.join(quote(q, c) for c in fk.columns)}) "
        f"REFERENCES {qualified(case, schemas, case.tables[fk.parent])} "
        f"({', '.join(quote(q, c) for c in fk.parent_columns)}) ON DELETE {rule}"
    )
    if fk.deferrable:
        text += f" DEFERRABLE INITIALLY {fk.deferrable}"
    return text


def _column_defs(case: Case, index: int) -> list[str]:
    spec = case.tables[index]
    q = case.backend
    defs = [f"{quote(q, 'id')} INTEGER NOT NULL PRIMARY KEY"]
    if spec.tenant:
        defs.append(f"{quote(q, 'tenant_id')} INTEGER NOT NULL")
    for fk in case.outgoing(index):
        defs.append(f"{quote(q, fk.column)} INTEGER{'' if fk.nullable else ' NOT NULL'}")
    if spec.stamped:
        defs.append(
            "`stamp` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP"
        )
    if spec.tenant_key:
        defs.append(f"UNIQUE ({quote(q, 'tenant_id')}, {quote(q, 'id')})")
    return defs


def create_statements(case: Case, schemas: Schemas, *, oracle: bool) -> list[str]:
    """Every statement that creates the case's schema (no rows)."""
    q = case.backend
    out: list[str] = []
    for i, spec in enumerate(case.tables):
        defs = _column_defs(case, i)
        if q == SQLITE:  # SQLite cannot add a key later; it checks references lazily
            defs += [_fk_clause(case, schemas, fk, oracle) for fk in case.outgoing(i)]
        name = qualified(case, schemas, spec)
        tail = " PARTITION BY RANGE (id)" if spec.partitioned else ""
        tail += " ENGINE=InnoDB" if q == MYSQL else ""
        out.append(f"CREATE TABLE {name} ({', '.join(defs)}){tail}")
        if spec.partitioned:
            out += [
                f'CREATE TABLE "{_partition(case, schemas, spec, 0)}" PARTITION OF {name} '
                f"FOR VALUES FROM (MINVALUE) TO ({PARTITION_SPLIT})",
                f'CREATE TABLE "{_partition(case, schemas, spec, 1)}" PARTITION OF {name} '
                f"FOR VALUES FROM ({PARTITION_SPLIT}) TO (MAXVALUE)",
            ]
    if q != SQLITE:
        out += _alter_keys(case, schemas, oracle)
    out += _indexes(case, schemas)
    out += _audit_statements(case, schemas)
    return out


def _partition(case: Case, schemas: Schemas, spec: TableSpec, part: int) -> str:
    """A partition's bare name (it lives in the parent's schema, the main one)."""
    del case, schemas
    return f"{spec.name}_p{part}"


def _alter_keys(case: Case, schemas: Schemas, oracle: bool) -> list[str]:
    out = []
    for fk in case.foreign_keys:
        spec = case.tables[fk.child]
        clause = _fk_clause(case, schemas, fk, oracle)
        if spec.partitioned:  # declared on each partition, not on the parent
            for part in (0, 1):
                pname = _partition(case, schemas, spec, part)
                out.append(
                    f'ALTER TABLE {quote(case.backend, schemas.main)}."{pname}" '
                    f'ADD CONSTRAINT "fk_{pname}_{fk.column}" {clause}'
                )
        else:
            out.append(
                f"ALTER TABLE {qualified(case, schemas, spec)} ADD CONSTRAINT "
                f"{quote(case.backend, f'fk_{spec.name}_{fk.column}')} {clause}"
            )
    return out


def _indexes(case: Case, schemas: Schemas) -> list[str]:
    q = case.backend
    out = []
    for i, spec in enumerate(case.tables):
        wanted: list[tuple[str, ...]] = [("tenant_id",)] if spec.tenant else []
        wanted += [fk.columns for fk in case.outgoing(i)]
        for cols in dict.fromkeys(wanted):
            ix = f"ix_{spec.name}_{'_'.join(cols)}"
            target = qualified(case, schemas, spec)
            if q == SQLITE:
                out.append(
                    f'CREATE INDEX "{ix}" ON "{spec.name}" ({", ".join(quote(q, c) for c in cols)})'
                )
            elif q == POSTGRESQL:
                out.append(
                    f'CREATE INDEX "{ix}" ON {target} ({", ".join(quote(q, c) for c in cols)})'
                )
            else:
                out.append(f"CREATE INDEX `{ix}` ON {target} ({', '.join(f'`{c}`' for c in cols)})")
    return out


def _audit_statements(case: Case, schemas: Schemas) -> list[str]:
    q = case.backend
    audit = _audit(case, schemas)
    serial = {
        SQLITE: "INTEGER PRIMARY KEY AUTOINCREMENT",
        POSTGRESQL: "SERIAL PRIMARY KEY",
        MYSQL: "INTEGER AUTO_INCREMENT PRIMARY KEY",
    }[q]
    out = [f"CREATE TABLE {audit} (seq {serial}, tbl VARCHAR(20) NOT NULL, row_id INTEGER)"]
    if q == POSTGRESQL:
        out.append(
            f"CREATE FUNCTION {quote(q, schemas.main)}.audit_delete() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {audit} (tbl, row_id) VALUES (TG_TABLE_NAME, OLD.id); "
            "RETURN OLD; END $$"
        )
    for spec in case.tables:
        if not spec.audited:
            continue
        target = qualified(case, schemas, spec)
        trigger = f"audit_{spec.name}"
        if q == POSTGRESQL:
            out.append(
                f'CREATE TRIGGER "{trigger}" AFTER DELETE ON {target} FOR EACH ROW '
                f"EXECUTE FUNCTION {quote(q, schemas.main)}.audit_delete()"
            )
        elif q == MYSQL:
            out.append(
                f"CREATE TRIGGER {quote(q, schemas.main)}.`{trigger}` AFTER DELETE ON {target} "
                f"FOR EACH ROW INSERT INTO {audit} (tbl, row_id) VALUES ('{spec.name}', OLD.id)"
            )
        else:
            out.append(
                f'CREATE TRIGGER "{trigger}" AFTER DELETE ON {target} FOR EACH ROW BEGIN '
                f"INSERT INTO {audit} (tbl, row_id) VALUES ('{spec.name}', OLD.id); END"
            )
    return out


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return f"'{value}'"


def insert_statements(case: Case, schemas: Schemas) -> list[str]:
    """The rows, one INSERT per table; run with reference checks off (see ``load``)."""
    out = []
    for i, spec in enumerate(case.tables):
        rows: tuple[Row, ...] = case.rows[i]
        if not rows:
            continue
        cols = case.columns(i)
        values = ", ".join("(" + ", ".join(_literal(r[c]) for c in cols) + ")" for r in rows)
        names = ", ".join(quote(case.backend, c) for c in cols)
        out.append(f"INSERT INTO {qualified(case, schemas, spec)} ({names}) VALUES {values}")
    return out


def audit_table(case: Case, schemas: Schemas) -> str:
    """The audit table's qualified name."""
    return _audit(case, schemas)


def drop_statements(backend: str, schemas: Schemas) -> list[str]:
    """Drop every table a case may have made (``t0`` ... ``t{MAX_TABLES - 1}`` in both
    schemas, the audit table and function), whatever the case: a failed example
    cannot leave tables behind for the next one. Run with reference checks off."""
    names = [f"t{i}" for i in range(MAX_TABLES)]
    places = [s for s in (schemas.main, schemas.other) if s] if backend != SQLITE else [""]
    targets = [
        f"{quote(backend, place)}.{quote(backend, n)}" if place else quote(backend, n)
        for place in places
        for n in [*names, AUDIT]
    ]
    if backend == POSTGRESQL:
        return [
            f"DROP TABLE IF EXISTS {', '.join(targets)} CASCADE",
            f"DROP FUNCTION IF EXISTS {quote(backend, schemas.main)}.audit_delete()",
        ]
    return [f"DROP TABLE IF EXISTS {name}" for name in targets]
