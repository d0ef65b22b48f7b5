"""Property test: erasing tenant 1 from generated schemas and data.

Hypothesis generates a schema (2-8 tables with an integer key ``id``; a ``tenant_id``
column on some of them, nullable or not; foreign keys forming a DAG, nullable or not,
``ON DELETE`` NO ACTION, CASCADE or SET NULL; self references; composite references
``(tenant_id, ref) -> parent (tenant_id, id)``) and data in which every row has an
owner tenant and references only rows of the same owner (an ``ON DELETE SET NULL``
reference may also point at another tenant's row: it says that the row outlives the
row it points at). Tenant 1 is erased with a batch size of 1-5, and the outcome is
compared with a model computed here in Python, independently of the engine:

* a row belongs to tenant 1 when its ``tenant_id`` is 1, or when it has no other
  tenant's ``tenant_id`` and references, through a foreign key that is not
  ``ON DELETE SET NULL``, a row that belongs to tenant 1 (a reference with a NULL
  column references nothing);
* those rows are gone, and every other row is exactly as before, except that its
  references into removed rows through ``ON DELETE SET NULL`` are now NULL;
* the report is verified, its counts are the model's (rows removed per table, rows
  with a reference cleared per table), and the dry run predicted every one of them.

Each test gets one database from the fixtures; every example drops and recreates
its tables in it (a database per example would be too slow on the servers). A
failure prints the schema and rows of the shrunk example and a ``@reproduce_failure``
blob that replays it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from models.erasure import ErasureReport, TableAction
from tests.conftest import TargetDB
from worker.catalog.reflection import reflect
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

SUBJECT = 1
#: Row owners; tenant 1 twice as likely, so that erasures have work to do.
OWNERS = (1, 1, 2, 3)
#: tenant_id column: NOT NULL, nullable, none (as ``TableSpec.tenant_nullable``).
TENANCY = (False, True, False, True, None)
NO_ACTION = "NO ACTION"
CASCADE = "CASCADE"
SET_NULL = "SET NULL"

Row = dict[str, Any]


@dataclass(frozen=True)
class Ref:
    """A foreign key ``column`` (with ``tenant_id`` first when composite) to ``parent``."""

    column: str
    #: Position of the referenced table in ``Case.tables`` (its own for a self reference).
    parent: int
    nullable: bool
    on_delete: str
    #: ``(tenant_id, column) -> parent (tenant_id, id)`` instead of ``column -> parent (id)``.
    composite: bool

    @property
    def columns(self) -> tuple[str, ...]:
        return ("tenant_id", self.column) if self.composite else (self.column,)

    @property
    def parent_columns(self) -> tuple[str, ...]:
        return ("tenant_id", "id") if self.composite else ("id",)


@dataclass(frozen=True)
class TableSpec:
    name: str
    #: None: no tenant_id column; otherwise whether it accepts NULL.
    tenant_nullable: bool | None
    refs: tuple[Ref, ...]

    @property
    def has_tenant(self) -> bool:
        return self.tenant_nullable is not None


@dataclass
class Case:
    """A schema (tables in insertion order: parents first) and its rows."""

    tables: list[TableSpec]
    rows: list[list[Row]]
    batch_size: int

    def describe(self) -> str:
        """The schema and rows, readably (printed with a falsifying example)."""
        lines = [f"erase tenant {SUBJECT} with batch_size={self.batch_size}"]
        for spec, rows in zip(self.tables, self.rows, strict=True):
            tenant = {None: "-", True: "NULL", False: "NOT NULL"}[spec.tenant_nullable]
            refs = ", ".join(
                f"({', '.join(r.columns)}) -> {self.tables[r.parent].name}"
                f"({', '.join(r.parent_columns)}) {'NULL' if r.nullable else 'NOT NULL'} "
                f"ON DELETE {r.on_delete}"
                for r in spec.refs
            )
            lines.append(f"  table {spec.name}: tenant_id {tenant}; refs: {refs or '-'}")
            lines.extend(f"    {row}" for row in rows)
        return "\n".join(lines)


# --- generation -------------------------------------------------------------------------
#
# Each table is drawn as one self-contained draft (tenant column, references, rows),
# with parents and referenced rows drawn as abstract picks that are resolved against
# the earlier tables afterwards. Hypothesis can then shrink a failing case by dropping
# whole tables and rows, which keeps falsifying examples small.


@dataclass(frozen=True)
class RefDraft:
    #: Which earlier table (modulo their number); unused for a self reference.
    parent: int
    nullable: bool
    on_delete: str
    #: Made composite if both tables have tenant_id (and, for SET NULL, it is nullable).
    composite: bool


@dataclass(frozen=True)
class RowDraft:
    owner: int
    null_tenant: bool
    #: Per reference: None for NULL, else which of the eligible parent rows (modulo).
    picks: tuple[int | None, ...]


@dataclass(frozen=True)
class TableDraft:
    tenant_nullable: bool | None
    #: References to earlier tables, then (optionally) the self reference.
    refs: tuple[RefDraft, ...]
    self_ref: bool
    rows: tuple[RowDraft, ...]
    #: Row ids in insertion order: a permutation, so that key order is not insertion order.
    ids: tuple[int, ...]


@st.composite
def _ref_drafts(draw: st.DrawFn, self_ref: bool) -> RefDraft:
    nullable = self_ref or draw(st.booleans())
    rules = [NO_ACTION, CASCADE, SET_NULL] if nullable else [NO_ACTION, CASCADE]
    on_delete = draw(st.sampled_from(rules))
    return RefDraft(draw(st.integers(0, 7)), nullable, on_delete, draw(st.booleans()))


#: A reference value: NULL (a quarter of the time, and what shrinking goes to) or a pick.
_PICKS = st.integers(0, 3).flatmap(lambda k: st.none() if k == 0 else st.integers(0, 7))


@st.composite
def _table_drafts(draw: st.DrawFn) -> TableDraft:
    tenant = draw(st.sampled_from(TENANCY))
    refs = draw(st.lists(_ref_drafts(False), max_size=3))
    self_ref = draw(st.integers(0, 3)) == 3
    if self_ref:
        refs.append(draw(_ref_drafts(True)))
    row = st.builds(
        RowDraft,
        owner=st.sampled_from(OWNERS),
        null_tenant=st.integers(0, 3).map(lambda k: k == 3),
        picks=st.tuples(*[_PICKS] * len(refs)),
    )
    rows = draw(st.lists(row, min_size=1, max_size=8))
    ids = draw(st.permutations(range(1, len(rows) + 1)))
    return TableDraft(tenant, tuple(refs), self_ref, tuple(rows), tuple(ids))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    drafts = draw(st.lists(_table_drafts(), min_size=2, max_size=8))
    # tables[i] references only tables[j], j <= i. Their names are in another order,
    # so that nothing can lean on alphabetical order.
    names = [f"t{k}" for k in draw(st.permutations(range(len(drafts))))]
    return _resolve(drafts, names, draw(st.integers(1, 5)))


def _resolve(drafts: list[TableDraft], names: list[str], batch_size: int) -> Case:
    tenancy = [d.tenant_nullable for d in drafts]
    if all(t is None for t in tenancy):
        tenancy[0] = False
    specs: list[TableSpec] = []
    rows: list[list[Row]] = []
    owners: list[dict[int, int]] = []
    for i, draft in enumerate(drafts):
        refs: list[tuple[Ref, int]] = []  # with the index of its pick in RowDraft.picks
        for k, r in enumerate(draft.refs):
            is_self = draft.self_ref and k == len(draft.refs) - 1
            if not is_self and i == 0:
                continue  # nothing earlier to reference
            parent = i if is_self else r.parent % i
            # SET NULL clears every column of the key: tenant_id too, so it must accept NULL.
            composite = (
                r.composite
                and tenancy[i] is not None
                and tenancy[parent] is not None
                and (r.on_delete != SET_NULL or bool(tenancy[i]))
            )
            column = "parent_id" if is_self else f"r{k}_{names[parent]}"
            refs.append((Ref(column, parent, r.nullable, r.on_delete, composite), k))
        spec = TableSpec(names[i], tenancy[i], tuple(ref for ref, _ in refs))
        own: list[Row] = []
        owner_of: dict[int, int] = {}
        for rid, draft_row in zip(draft.ids, draft.rows, strict=True):
            row: Row = {"id": rid}
            if spec.has_tenant:
                null = bool(spec.tenant_nullable) and draft_row.null_tenant
                row["tenant_id"] = None if null else draft_row.owner
            row["note"] = f"{spec.name}#{rid} made for tenant {draft_row.owner}"
            for ref, k in refs:
                pool, pool_owner = (
                    (own, owner_of)
                    if ref.parent == i
                    else (
                        rows[ref.parent],
                        owners[ref.parent],
                    )
                )
                # A SET NULL reference says the row outlives the one it points at, so it
                # may point at another tenant's row; every other reference stays within
                # the owner's rows (a composite one within the same tenant_id).
                anyone = ref.on_delete == SET_NULL and not ref.composite
                targets = [
                    p["id"]
                    for p in pool
                    if (anyone or pool_owner[p["id"]] == draft_row.owner)
                    and (
                        not ref.composite
                        or row["tenant_id"] is None
                        or p["tenant_id"] == row["tenant_id"]
                    )
                ]
                pick = draft_row.picks[k]
                if targets and (pick is not None or not ref.nullable):
                    row[ref.column] = targets[(pick or 0) % len(targets)]
                elif ref.nullable:
                    row[ref.column] = None
                else:
                    break  # a NOT NULL reference with nothing to point at: no such row
            else:
                owner_of[rid] = draft_row.owner
                own.append(row)
        specs.append(spec)
        rows.append(own)
        owners.append(owner_of)
    return Case(specs, rows, batch_size)


# --- the model ----------------------------------------------------------------------------


@dataclass
class Expected:
    #: Table -> the rows that must remain, by id, with their new values.
    survivors: dict[str, dict[int, Row]]
    #: Table -> rows of tenant 1 (to be removed).
    removed: dict[str, int]
    #: Table -> surviving rows with at least one reference cleared.
    nullified: dict[str, int]


def _target(ref: Ref, row: Row) -> int | None:
    """Id of the row that ``ref`` of ``row`` references, or None (a NULL column)."""
    values = [row[c] for c in ref.columns]
    if any(v is None for v in values):
        return None
    return int(row[ref.column])


def expected_outcome(  # noqa: C901, PLR0912 - the reference model, kept as plain as it reads
    case: Case, before: dict[str, dict[int, Row]]
) -> Expected:
    """What the erasure must leave, from the rows as read back before it."""
    members: set[tuple[str, int]] = set()
    changed = True
    while changed:
        changed = False
        for spec in case.tables:
            for rid, row in before[spec.name].items():
                if (spec.name, rid) in members:
                    continue
                tenant = row.get("tenant_id")
                if tenant == SUBJECT:
                    belongs = True
                elif tenant is not None:
                    belongs = False
                else:
                    belongs = any(
                        ref.on_delete != SET_NULL
                        and (target := _target(ref, row)) is not None
                        and (case.tables[ref.parent].name, target) in members
                        for ref in spec.refs
                    )
                if belongs:
                    members.add((spec.name, rid))
                    changed = True
    survivors: dict[str, dict[int, Row]] = {}
    removed: dict[str, int] = {}
    nullified: dict[str, int] = {}
    for spec in case.tables:
        kept: dict[int, Row] = {}
        for rid, row in before[spec.name].items():
            if (spec.name, rid) in members:
                removed[spec.name] = removed.get(spec.name, 0) + 1
                continue
            new = dict(row)
            for ref in spec.refs:
                target = _target(ref, row)
                if ref.on_delete == SET_NULL and (case.tables[ref.parent].name, target) in members:
                    new.update(dict.fromkeys(ref.columns))
                    # The engine counts cleared references: two on one row count twice.
                    nullified[spec.name] = nullified.get(spec.name, 0) + 1
            kept[rid] = new
        survivors[spec.name] = kept
    return Expected(survivors, removed, nullified)


# --- the database -------------------------------------------------------------------------


def build_metadata(case: Case) -> tuple[sa.MetaData, list[sa.Table]]:
    metadata = sa.MetaData()
    referenced_by_tenant = {
        ref.parent for spec in case.tables for ref in spec.refs if ref.composite
    }
    tables = []
    for i, spec in enumerate(case.tables):
        items: list[Any] = [sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)]
        if spec.has_tenant:
            items.append(sa.Column("tenant_id", sa.Integer, nullable=spec.tenant_nullable))
        items.append(sa.Column("note", sa.String(60), nullable=False))
        for ref in spec.refs:
            items.append(sa.Column(ref.column, sa.Integer, nullable=ref.nullable))
            parent = case.tables[ref.parent].name
            items.append(
                sa.ForeignKeyConstraint(
                    list(ref.columns),
                    [f"{parent}.{c}" for c in ref.parent_columns],
                    name=f"fk_{spec.name}_{ref.column}",
                    ondelete=None if ref.on_delete == NO_ACTION else ref.on_delete,
                )
            )
        if i in referenced_by_tenant:
            items.append(sa.UniqueConstraint("tenant_id", "id", name=f"uq_{spec.name}_tenant"))
        tables.append(sa.Table(spec.name, metadata, *items))
    return metadata, tables


def reset(db: TargetDB) -> None:
    """Drop every table of the default schema."""
    existing = sa.MetaData()
    existing.reflect(db.engine)
    existing.drop_all(db.engine)


def load(db: TargetDB, case: Case) -> list[sa.Table]:
    reset(db)
    metadata, tables = build_metadata(case)
    db.create(metadata)
    with db.engine.begin() as conn:
        for table, rows in zip(tables, case.rows, strict=True):
            if rows:
                conn.execute(sa.insert(table), [dict(r) for r in rows])
    return tables


def snapshot(db: TargetDB, tables: list[sa.Table]) -> dict[str, dict[int, Row]]:
    result = {}
    with db.engine.connect() as conn:
        for table in tables:
            rows = conn.execute(sa.select(table).order_by(table.c.id)).mappings().all()
            result[table.name] = {int(r["id"]): dict(r) for r in rows}
    return result


def _counts(report: ErasureReport, action: TableAction) -> dict[str, int]:
    """Rows per table (bare name) for one action, leaving out zeros."""
    return {
        o.table.rsplit(".", 1)[-1]: o.rows for o in report.tables if o.action is action and o.rows
    }


def check(db: TargetDB, case: Case) -> None:
    """Load the case, dry-run and erase tenant 1, and compare with the model."""
    note(case.describe())
    tables = load(db, case)
    before = snapshot(db, tables)
    assert before == {
        spec.name: {r["id"]: {c.name: r.get(c.name) for c in t.columns} for r in rows}
        for spec, t, rows in zip(case.tables, tables, case.rows, strict=True)
    }, "the database does not hold the generated rows"
    want = expected_outcome(case, before)
    note(f"expected: removed {want.removed}, nullified {want.nullified}")

    plan = build_plan(reflect(db.engine), ["tenant_id"])
    predicted = dry_run(db.engine, plan, SUBJECT)
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=case.batch_size))
    after = snapshot(db, tables)

    for name, rows in after.items():
        left = sorted(set(rows) - set(want.survivors[name]))
        assert not left, f"rows of tenant {SUBJECT} left in {name}: ids {left}"
    assert after == want.survivors
    assert report.verified is True
    assert _counts(report, TableAction.DELETE) == want.removed
    assert _counts(report, TableAction.NULLIFY) == want.nullified
    assert report.total_rows == sum(want.removed.values())
    assert predicted.total_rows == report.total_rows
    outcome = {(o.table, o.action): o.rows for o in report.tables}
    assert {(o.table, o.action): o.rows for o in predicted.tables} == outcome


# --- the tests ------------------------------------------------------------------------------

_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # A failure prints the schema and rows (see ``check``) and a @reproduce_failure blob.
    "print_blob": True,
    # Shrink one failure, not every distinct one: a failing run stays short.
    "report_multiple_bugs": False,
}


#: Generating takes seconds; shrinking a failure may take Hypothesis up to 5 minutes.
_TIMEOUT = pytest.mark.timeout(600)


@pytest.mark.slow
@_TIMEOUT
@settings(max_examples=200, **_SETTINGS)
@given(case=cases())
def test_erase_generated_schema_sqlite(sqlite_db: TargetDB, case: Case) -> None:
    check(sqlite_db, case)


@pytest.mark.slow
@pytest.mark.postgres
@_TIMEOUT
@settings(max_examples=75, **_SETTINGS)
@given(case=cases())
def test_erase_generated_schema_postgresql(pg: TargetDB, case: Case) -> None:
    check(pg, case)


@pytest.mark.slow
@pytest.mark.mysql
@_TIMEOUT
@settings(max_examples=75, **_SETTINGS)
@given(case=cases())
def test_erase_generated_schema_mariadb(mysql: TargetDB, case: Case) -> None:
    check(mysql, case)
