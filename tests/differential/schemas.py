"""Hypothesis strategies for random multi-tenant schemas and their data.

A case is 4-12 tables (``t0`` ... ``t11``). Table ``t0`` and some others carry the
subject column ``tenant_id``; the others belong to a tenant only through the rows
they reference. The shapes the engine has to get right are all drawn here:

* trees and diamonds (each table references one or two earlier tables);
* self-reference trees (a nullable ``up_id``);
* 2-3-table cycles closed by a back edge from a table to a later one that reaches it:
  nullable, or (PostgreSQL) NOT NULL and ``DEFERRABLE``;
* ``ON DELETE`` NO ACTION, RESTRICT, CASCADE and SET NULL mixed;
* composite keys ``(tenant_id, ref) -> parent (tenant_id, id)``;
* cross-schema keys (PostgreSQL, MariaDB: some tables live in the second schema);
* PostgreSQL tables partitioned by range of ``id`` whose foreign keys are declared on
  the partitions only (nothing references such a table);
* an ``AFTER DELETE`` audit trigger on some root tables, writing into ``audit_log``,
  a table outside the subject's reach;
* MariaDB ``ON UPDATE CURRENT_TIMESTAMP`` columns on tables with a SET NULL key.

Every row has an owner (tenant 1, the subject, or 2 or 3); ``tenant_id`` is its owner
and its references point at rows of the same owner, except for a few drawn to point
across owners (so that refusals are exercised too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

SUBJECT = 1
#: Most tables a case has.
MAX_TABLES = 12
#: Owners a row is drawn from: the subject twice as likely as each other tenant.
OWNERS = (1, 1, 2, 3)

NO_ACTION = "NO ACTION"
RESTRICT = "RESTRICT"
CASCADE = "CASCADE"
SET_NULL = "SET NULL"
#: Rules the database would refuse a delete under; the oracle makes them cascade.
BLOCKING = (NO_ACTION, RESTRICT)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
MYSQL = "mysql"

#: Value of a MariaDB ``stamp`` column as loaded; an UPDATE that fires its
#: ``ON UPDATE CURRENT_TIMESTAMP`` changes it.
STAMP = "2001-02-03 04:05:06"
#: Partitioned tables: ids below this go to the first partition, the rest to the second.
PARTITION_SPLIT = 4

Row = dict[str, Any]


@dataclass(frozen=True)
class ForeignKeySpec:
    """``child.column`` (with ``tenant_id`` first when composite) -> ``parent``."""

    child: int
    parent: int
    column: str
    nullable: bool
    on_delete: str
    composite: bool = False
    #: PostgreSQL: "" (not deferrable), "DEFERRED" or "IMMEDIATE" (the initial mode).
    deferrable: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return ("tenant_id", self.column) if self.composite else (self.column,)

    @property
    def parent_columns(self) -> tuple[str, ...]:
        return ("tenant_id", "id") if self.composite else ("id",)


@dataclass(frozen=True)
class TableSpec:
    name: str
    #: In the second schema (PostgreSQL ``other side``, MariaDB ``<db>_other``).
    other_schema: bool = False
    #: Has the subject column ``tenant_id`` (NOT NULL).
    tenant: bool = False
    #: PostgreSQL: partitioned by range of ``id``, foreign keys on the partitions.
    partitioned: bool = False
    #: An AFTER DELETE trigger inserts ``(table, id)`` into ``audit_log``.
    audited: bool = False
    #: MariaDB: a ``stamp TIMESTAMP ... ON UPDATE CURRENT_TIMESTAMP`` column.
    stamped: bool = False
    #: ``UNIQUE (tenant_id, id)``: the target of a composite key.
    tenant_key: bool = False


@dataclass(frozen=True)
class Case:
    """One schema and its data, for one engine."""

    backend: str
    tables: tuple[TableSpec, ...]
    foreign_keys: tuple[ForeignKeySpec, ...]
    #: Rows per table, in ``tables`` order, each with every column.
    rows: tuple[tuple[Row, ...], ...]
    #: The owner of each row, parallel to ``rows``.
    owners: tuple[tuple[int, ...], ...] = field(repr=False)

    def columns(self, index: int) -> list[str]:
        """Column names of table ``index`` in declaration order."""
        spec = self.tables[index]
        cols = ["id"]
        if spec.tenant:
            cols.append("tenant_id")
        cols += [fk.column for fk in self.foreign_keys if fk.child == index]
        if spec.stamped:
            cols.append("stamp")
        return cols

    def outgoing(self, index: int) -> list[ForeignKeySpec]:
        return [fk for fk in self.foreign_keys if fk.child == index]

    def describe(self) -> str:
        """A readable summary for a failing example (the SQL is printed separately)."""
        lines = []
        for i, spec in enumerate(self.tables):
            flags = [
                name
                for name, on in (
                    ("tenant", spec.tenant),
                    ("other-schema", spec.other_schema),
                    ("partitioned", spec.partitioned),
                    ("audited", spec.audited),
                    ("stamped", spec.stamped),
                )
                if on
            ]
            refs = [
                f"{fk.column}{'' if fk.nullable else '!'}->{self.tables[fk.parent].name}"
                f" {fk.on_delete}{' composite' if fk.composite else ''}"
                f"{' deferrable ' + fk.deferrable if fk.deferrable else ''}"
                for fk in self.outgoing(i)
            ]
            lines.append(f"{spec.name} [{', '.join(flags)}] {'; '.join(refs)}")
            lines.append(f"  rows: {list(self.rows[i])} owners: {list(self.owners[i])}")
        return "\n".join(lines)


def _rule(draw: st.DrawFn, nullable: bool) -> str:
    choices = [NO_ACTION, RESTRICT, CASCADE, CASCADE] + ([SET_NULL, SET_NULL] if nullable else [])
    return draw(st.sampled_from(choices))


def _forward_keys(
    draw: st.DrawFn, backend: str, n: int, tenant: list[bool]
) -> list[ForeignKeySpec]:
    """Each table after the first references one or two earlier tables."""
    fks: list[ForeignKeySpec] = []
    for child in range(1, n):
        count = draw(st.integers(1, min(2, child)))
        parents = draw(
            st.lists(st.integers(0, child - 1), min_size=count, max_size=count, unique=True)
        )
        for parent in parents:
            composite = tenant[child] and tenant[parent] and draw(st.integers(0, 4)) == 0
            nullable = composite or draw(st.booleans())
            rule = _rule(draw, nullable and not composite)
            deferrable = ""
            if backend == POSTGRESQL and draw(st.integers(0, 5)) == 0:
                deferrable = draw(st.sampled_from(["DEFERRED", "IMMEDIATE"]))
            fks.append(
                ForeignKeySpec(
                    child, parent, f"t{parent}_id", nullable, rule, composite, deferrable
                )
            )
    return fks


def _ancestors(fks: list[ForeignKeySpec], n: int) -> list[dict[int, int]]:
    """For each table, the earlier tables it reaches through forward keys, by distance."""
    reach: list[dict[int, int]] = [{} for _ in range(n)]
    for child in range(n):
        for fk in fks:
            if fk.child == child and fk.parent < child:
                for anc, dist in [(fk.parent, 0), *reach[fk.parent].items()]:
                    if reach[child].get(anc, 99) > dist + 1:
                        reach[child][anc] = dist + 1
    return reach


def _back_keys(
    draw: st.DrawFn, backend: str, n: int, fks: list[ForeignKeySpec]
) -> list[ForeignKeySpec]:
    """Back edges closing 2-3-table cycles: table i references a later table that
    reaches i through at most two forward keys."""
    reach = _ancestors(fks, n)
    closable = [(i, j) for j in range(n) for i, dist in reach[j].items() if dist <= 2]
    if not closable:
        return []
    picks = draw(st.lists(st.sampled_from(closable), max_size=2, unique=True))
    back: list[ForeignKeySpec] = []
    for i, j in picks:
        if backend == POSTGRESQL and draw(st.integers(0, 3)) == 0:
            # A NOT NULL cycle: only a deferrable key lets such rows exist at all.
            mode = draw(st.sampled_from(["DEFERRED", "IMMEDIATE"]))
            rule = draw(st.sampled_from([NO_ACTION, CASCADE]))
            back.append(ForeignKeySpec(i, j, f"t{j}_id", False, rule, deferrable=mode))
        else:
            back.append(ForeignKeySpec(i, j, f"t{j}_id", True, _rule(draw, nullable=True)))
    return back


def _self_keys(draw: st.DrawFn, n: int) -> list[ForeignKeySpec]:
    fks = []
    for i in range(n):
        if draw(st.integers(0, 3)) == 0:
            rule = draw(st.sampled_from([NO_ACTION, CASCADE, SET_NULL]))
            fks.append(ForeignKeySpec(i, i, "up_id", True, rule))
    return fks


@st.composite
def cases(
    draw: st.DrawFn,
    backend: str,
    max_tables: int = MAX_TABLES,
    *,
    stamps: bool = True,
    partitions: bool = True,
) -> Case:
    """A random schema of 4 to ``max_tables`` tables and its data, for ``backend``.

    ``stamps`` / ``partitions`` off leave out MariaDB stamp columns / PostgreSQL
    partitioned tables (to look past a known defect when searching for others)."""
    n = draw(st.integers(4, max_tables))
    tenant = [True] + [draw(st.booleans()) for _ in range(1, n)]
    fks = _forward_keys(draw, backend, n, tenant)
    fks += _back_keys(draw, backend, n, fks)
    fks += _self_keys(draw, n)
    referenced = {fk.parent for fk in fks}
    tables = []
    for i in range(n):
        outgoing = [fk for fk in fks if fk.child == i]
        other = backend != SQLITE and i > 0 and draw(st.integers(0, 6)) == 0
        partitioned = (
            backend == POSTGRESQL
            and partitions
            and i not in referenced
            and bool(outgoing)
            and not other
            and draw(st.integers(0, 2)) == 0
        )
        audited = tenant[i] and not outgoing and not other and draw(st.booleans())
        stamped = (
            backend == MYSQL
            and stamps
            and any(fk.on_delete == SET_NULL for fk in outgoing)
            and draw(st.integers(0, 2)) > 0
        )
        tenant_key = any(fk.composite and fk.parent == i for fk in fks)
        tables.append(
            TableSpec(f"t{i}", other, tenant[i], partitioned, audited, stamped, tenant_key)
        )
    owners = [
        tuple(draw(st.lists(st.sampled_from(OWNERS), min_size=1, max_size=7))) for _ in range(n)
    ]
    rows = _rows(draw, tables, fks, owners)
    return Case(backend, tuple(tables), tuple(fks), rows, tuple(owners))


def _pick_target(
    draw: st.DrawFn, fk: ForeignKeySpec, owner: int, row_id: int, owners: list[tuple[int, ...]]
) -> int | None:
    """The id a row's reference points at (ids are 1-based positions)."""
    parent_owners = owners[fk.parent]
    limit = row_id - 1 if fk.parent == fk.child else len(parent_owners)  # a tree: earlier rows
    same = [k + 1 for k in range(limit) if parent_owners[k] == owner]
    every = list(range(1, limit + 1))
    mode = draw(st.sampled_from(["same", "same", "same", "null", "cross"]))
    if mode == "cross" and not fk.composite and every:
        return draw(st.sampled_from(every))
    if mode == "same" and same:
        return draw(st.sampled_from(same))
    if fk.nullable:
        return None
    return draw(st.sampled_from(same or every))


def _rows(
    draw: st.DrawFn,
    tables: list[TableSpec],
    fks: list[ForeignKeySpec],
    owners: list[tuple[int, ...]],
) -> tuple[tuple[Row, ...], ...]:
    result = []
    for i, spec in enumerate(tables):
        rows = []
        for k, owner in enumerate(owners[i]):
            row: Row = {"id": k + 1}
            if spec.tenant:
                row["tenant_id"] = owner
            for fk in fks:
                if fk.child == i:
                    row[fk.column] = _pick_target(draw, fk, owner, k + 1, owners)
            if spec.stamped:
                row["stamp"] = STAMP
            rows.append(row)
        result.append(tuple(rows))
    return tuple(result)
