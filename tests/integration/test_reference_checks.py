"""``fk_checks``: who checks the references into a batch of removed rows.

With ``eraser`` (PostgreSQL), a batch of a parent table goes with the database's
per-row foreign-key triggers off for its transaction, and Eraser itself removes the
children it takes along (``sweep``), clears the ``ON DELETE SET NULL`` references and
probes every other reference. These tests hold that to the database's own standard, on
real servers:

* the same data erased both ways ends byte for byte the same;
* a role that may not switch the triggers off gets the database's checks (``auto``) or
  a refusal before anything is written (``eraser``);
* writers adding references to the subject's rows while it is erased never leave a row
  pointing at nothing (every foreign key of the database is checked for orphans), also
  when the sessions default to snapshot isolation;
* tables with triggers or rules, or referenced from a schema the catalog did not read,
  keep the database's checks; a fan-out too wide for one transaction is split.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.erasure import ErasureReport, TableAction
from models.registry import Service
from tests.conftest import PG_ADMIN_URL, TargetDB, make_db
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.dialects import is_foreign_key_violation
from worker.exceptions import ReferenceChecksUnavailable
from worker.execution import batch_erasure, server_batches
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions, Progress, ProgressCallback
from worker.faults import DatabaseFailure
from worker.planning.building import build_plan
from worker.service import PlanCache, nothing_here

SUBJECT = 1
Row = dict[str, Any]
Snapshot = dict[str, list[tuple[Any, ...]]]
#: No background thread outlives this, whatever happens to the test.
THREAD_DEADLINE_SECONDS = 60.0


# --- helpers ------------------------------------------------------------------------------


@contextmanager
def granted_replication_role(db: TargetDB) -> Iterator[None]:
    """``GRANT SET ON PARAMETER session_replication_role`` to ``db``'s own role (PG 15+)
    while inside; revoked on the way out, or the role could not be dropped."""
    role = db.engine.url.username
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'GRANT SET ON PARAMETER session_replication_role TO "{role}"')
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'REVOKE SET ON PARAMETER session_replication_role FROM "{role}"')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def not_pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDB]:
    """A fresh SQLite or MariaDB database: neither has per-transaction trigger switches."""
    yield from make_db(request.param, tmp_path)


def col(name: str, *args: Any, **kw: Any) -> sa.Column[Any]:
    kw.setdefault("autoincrement", False)
    return sa.Column(name, *args, **kw)


def run_erase(
    db: TargetDB,
    subject: int,
    fk_checks: str,
    batch_size: int = 7,
    schemas: list[str] | None = None,
    subject_columns: tuple[str, ...] = ("tenant_id",),
    progress: ProgressCallback | None = None,
) -> ErasureReport:
    plan = build_plan(reflect(db.engine, schemas), list(subject_columns))
    options = ExecutionOptions(batch_size=batch_size, fk_checks=fk_checks)
    return erase(db.engine, plan, subject, options, progress)


def outcomes(report: ErasureReport) -> set[tuple[str, TableAction, int]]:
    return {(t.table, t.action, t.rows) for t in report.tables}


def rows_of(report: ErasureReport, table: str, action: TableAction = TableAction.DELETE) -> int:
    return sum(t.rows for t in report.tables if t.table == table and t.action is action)


def orphans(engine: sa.Engine) -> tuple[int, dict[str, int]]:
    """Check every foreign key the database declares, in every schema: how many were
    checked, and those with rows whose (non-NULL) key matches no referenced row."""
    catalog = sa.text(
        "SELECT k.conname, k.conrelid::regclass::text, k.confrelid::regclass::text,"
        " ARRAY(SELECT quote_ident(a.attname) FROM unnest(k.conkey) WITH ORDINALITY u(n, i)"
        "  JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),"
        " ARRAY(SELECT quote_ident(a.attname) FROM unnest(k.confkey) WITH ORDINALITY u(n, i)"
        "  JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)"
        " FROM pg_constraint k WHERE k.contype = 'f' ORDER BY 1"
    )
    found: dict[str, int] = {}
    with engine.connect() as conn:
        fks = conn.execute(catalog).all()
        for name, child, parent, child_cols, parent_cols in fks:
            present = " AND ".join(f"c.{c} IS NOT NULL" for c in child_cols)
            match = " AND ".join(
                f"p.{p} = c.{c}" for c, p in zip(child_cols, parent_cols, strict=True)
            )
            dangling = conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {child} c WHERE {present}"
                    f" AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
                )
            ).scalar_one()
            if dangling:
                found[f"{child}.{name}"] = int(dangling)
    return len(fks), found


def count(engine: sa.Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


# --- a shop: every kind of reference the shortcut handles --------------------------------

SHOP_SUBJECT = ("tenant_id", "tenants.id")


def shop_metadata() -> sa.MetaData:
    """tenants -> customers -> orders, and around orders: two leaf children, an ON DELETE
    CASCADE child, a child with its own tenant column (guarded) and a kept table whose
    ON DELETE SET NULL reference is cleared."""
    md = sa.MetaData()
    sa.Table("tenants", md, col("id", sa.Integer, primary_key=True), col("name", sa.String(40)))
    sa.Table(
        "customers",
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
        col("name", sa.String(40), nullable=False),
    )
    sa.Table(
        "orders",
        md,
        col("id", sa.Integer, primary_key=True),
        # NULL on some orders: only their customer ties them to a tenant.
        col("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=True, index=True),
        col("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
        col("total", sa.Integer, nullable=False),
    )
    for name, extra in (("order_items", "qty"), ("payments", "cents")):
        sa.Table(
            name,
            md,
            col("id", sa.Integer, primary_key=True),
            col("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
            col(extra, sa.Integer, nullable=False),
        )
    sa.Table(
        "shipments",
        md,
        col("id", sa.Integer, primary_key=True),
        col(
            "order_id",
            sa.Integer,
            sa.ForeignKey("orders.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        col("carrier", sa.String(20), nullable=False),
    )
    sa.Table(
        "refunds",
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
        col("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
        col("cents", sa.Integer, nullable=False),
    )
    sa.Table(
        "audit_notes",
        md,
        col("id", sa.Integer, primary_key=True),
        col(
            "order_id",
            sa.Integer,
            sa.ForeignKey("orders.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
        col("note", sa.String(40), nullable=False),
    )
    return md


@dataclass
class Shop:
    """The shop's rows, each with its owner (the tenant; for an audit note, the owner of
    the order it references, 0 for none)."""

    md: sa.MetaData = field(default_factory=shop_metadata)
    rows: dict[str, list[tuple[Row, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = {t.name: [] for t in self.md.sorted_tables}
        add = self._add
        for tenant in (1, 2, 3):
            add("tenants", tenant, id=tenant, name=f"tenant {tenant}")
        # Ids interleave the tenants, so the subject's rows sit among the others'.
        owners = [1, 2, 1, 3, 1, 1, 2, 1]
        order_id = 0
        for c in range(1, 49):
            tenant = owners[c % len(owners)]
            add("customers", tenant, id=c, tenant_id=tenant, name=f"customer {c}")
            for k in range(2):
                order_id += 1
                o = order_id
                own = None if c % 4 == 0 and k == 1 else tenant
                add("orders", tenant, id=o, tenant_id=own, customer_id=c, total=o * 3)
                for i in range(2):
                    add("order_items", tenant, id=o * 10 + i, order_id=o, qty=i + 1)
                add("payments", tenant, id=o, order_id=o, cents=o * 100)
                if o % 2:
                    add("shipments", tenant, id=o, order_id=o, carrier=f"carrier {o % 5}")
                if o % 3 == 0:
                    add("refunds", tenant, id=o, tenant_id=tenant, order_id=o, cents=o)
                if o % 2 == 0:
                    add("audit_notes", tenant, id=o, order_id=o, note=f"checked {o}")
        for n in range(1, 4):
            add("audit_notes", 0, id=1000 + n, order_id=None, note=f"unrelated {n}")

    def _add(self, table: str, owner: int, **values: Any) -> None:
        self.rows[table].append((values, owner))

    def load(self, db: TargetDB) -> None:
        db.create(self.md)
        for table in self.md.sorted_tables:
            db.insert(table, [r for r, _ in self.rows[table.name]])

    def snapshot(self, db: TargetDB) -> Snapshot:
        return db.snapshot(*self.md.sorted_tables)

    def expected(self, erased: set[int]) -> Snapshot:
        """Every row as it must be once the tenants in ``erased`` are erased."""
        result = {}
        for table in self.md.sorted_tables:
            kept = []
            for values, owner in self.rows[table.name]:
                row = dict(values)
                if table.name == "audit_notes":
                    if owner in erased:
                        row["order_id"] = None  # ON DELETE SET NULL, from a kept table
                elif owner in erased:
                    continue
                kept.append(tuple(row[c.name] for c in table.columns))
            result[table.fullname] = sorted(kept, key=repr)
        return result

    def outcomes(self, tenant: int) -> dict[str, int]:
        """Rows erased per table (and audit notes cleared) for ``tenant``."""
        return {
            table: sum(1 for _, owner in rows if owner == tenant)
            for table, rows in self.rows.items()
        }


# --- 1. the same data erased both ways -----------------------------------------------------


@pytest.mark.postgres
def test_eraser_checks_end_exactly_as_the_database_checks(pg: TargetDB, pg_twin: TargetDB) -> None:
    shop = Shop()
    reports = {}
    snapshots = {}
    for db, mode in ((pg, "eraser"), (pg_twin, "database")):
        shop.load(db)
        assert shop.snapshot(db) == shop.expected(set())
        reports[mode] = run_erase(db, SUBJECT, mode, subject_columns=SHOP_SUBJECT)
        snapshots[mode] = shop.snapshot(db)
        assert orphans(db.engine) == (8, {})

    eraser, database = reports["eraser"], reports["database"]
    assert eraser.verified
    assert database.verified
    assert outcomes(eraser) == outcomes(database)
    assert eraser.total_rows == database.total_rows
    # Other tenants' rows byte-identical; the subject's gone; its audit notes cleared.
    assert snapshots["eraser"] == snapshots["database"] == shop.expected({SUBJECT})
    expected = shop.outcomes(SUBJECT)
    for table, rows in expected.items():
        action = TableAction.NULLIFY if table == "audit_notes" else TableAction.DELETE
        assert rows_of(eraser, f"public.{table}", action) == rows, table
    assert eraser.total_rows == sum(n for t, n in expected.items() if t != "audit_notes")
    # Every parent of the chain went (at least partly) the shortcut's way; with
    # ``database`` none did.
    assert {"public.customers", "public.orders", "public.tenants"} <= set(eraser.checked_by_eraser)
    assert database.checked_by_eraser == []


# --- 2. who may switch the triggers off -----------------------------------------------------


@pytest.mark.postgres
def test_a_plain_role_gets_the_database_checks_until_granted_the_setting(
    pg_plain: TargetDB,
) -> None:
    db = pg_plain
    shop = Shop()
    shop.load(db)
    before = shop.snapshot(db)

    with pytest.raises(ReferenceChecksUnavailable):
        run_erase(db, SUBJECT, "eraser", subject_columns=SHOP_SUBJECT)
    assert shop.snapshot(db) == before  # refused before the first write

    report = run_erase(db, SUBJECT, "auto", subject_columns=SHOP_SUBJECT)
    assert report.verified
    assert report.checked_by_eraser == []
    assert shop.snapshot(db) == shop.expected({SUBJECT})

    with granted_replication_role(db):
        report = run_erase(db, 2, "auto", subject_columns=SHOP_SUBJECT)
    assert report.verified
    assert "public.orders" in report.checked_by_eraser
    assert shop.snapshot(db) == shop.expected({SUBJECT, 2})
    assert orphans(db.engine)[1] == {}


@pytest.mark.postgres
def test_an_explicit_request_is_refused_even_when_the_subject_has_no_rows(
    pg_plain: TargetDB,
) -> None:
    """``fk_checks = "eraser"`` on a role that cannot have it is a configuration error:
    it must show on the first erasure, not on the first one that finds rows (the
    engine's own early exit, and the worker's quick path, both skip the walk)."""
    db = pg_plain
    shop = Shop()
    shop.load(db)
    absent = 999
    with pytest.raises(ReferenceChecksUnavailable):
        run_erase(db, absent, "eraser", subject_columns=SHOP_SUBJECT)
    assert run_erase(db, absent, "auto", subject_columns=SHOP_SUBJECT).total_rows == 0

    service = Service(url_env="UNUSED", fk_checks="eraser")
    plans = PlanCache()
    with pytest.raises(ReferenceChecksUnavailable):
        nothing_here(db.engine, "shop", service, "tenant", SHOP_SUBJECT, str(absent), plans)
    with granted_replication_role(db):
        report = nothing_here(
            db.engine, "shop", service, "tenant", SHOP_SUBJECT, str(absent), plans
        )
        assert report is not None
        assert report.total_rows == 0
        assert report.verified
        assert run_erase(db, absent, "eraser", subject_columns=SHOP_SUBJECT).verified


@pytest.mark.postgres
def test_a_role_under_row_level_security_is_refused_before_anything_is_touched(
    pg_plain: TargetDB,
) -> None:
    """Row-level security hides the archived notes from the erasure's role (the table
    forces it on its owner). Those notes are the subject's too: skipping them, the
    erasure reported them gone (found in review). Eraser's sessions set
    ``row_security = off``, so the first statement the policy would filter fails with
    42501, naming the table, before any row is touched (the granted role that checks
    references itself included)."""
    db = pg_plain
    load_accounts(db, 110)
    db.run(
        "ALTER TABLE notes ADD COLUMN archived bool NOT NULL DEFAULT false",
        "UPDATE notes SET archived = true WHERE mod(id, 10) = 0",
        "ALTER TABLE notes ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE notes FORCE ROW LEVEL SECURITY",
        "CREATE POLICY live_notes ON notes USING (NOT archived)",
    )
    admin = create_engine(sa.make_url(PG_ADMIN_URL).set(database=db.engine.url.database))
    # The role with the server's settings, as an application connects.
    as_an_application = sa.create_engine(sa.make_url(db.url).set(drivername="postgresql+psycopg2"))
    everything = "SELECT count(*) FROM {} WHERE {}"
    try:
        hidden = count(admin, everything.format("notes", "archived"))
        assert count(as_an_application, everything.format("notes", "archived")) == 0 < hidden
        before = {t: count(admin, everything.format(t, "true")) for t in RACE_TABLES}
        for fk_checks in ("auto", "database"):
            with granted_replication_role(db), pytest.raises(DatabaseFailure) as refused:
                run_erase(db, SUBJECT, fk_checks, batch_size=10)
            assert refused.value.code == "42501"
            assert 'row-level security policy for table "notes"' in str(refused.value)
            assert {t: count(admin, everything.format(t, "true")) for t in RACE_TABLES} == before
        assert orphans(admin) == (3, {})
    finally:
        admin.dispose()
        as_an_application.dispose()


def test_other_databases_refuse_eraser_checks_and_default_to_their_own(
    not_pg: TargetDB,
) -> None:
    shop = Shop()
    shop.load(not_pg)
    before = shop.snapshot(not_pg)
    with pytest.raises(ReferenceChecksUnavailable):
        run_erase(not_pg, SUBJECT, "eraser", subject_columns=SHOP_SUBJECT)
    assert shop.snapshot(not_pg) == before
    report = run_erase(not_pg, SUBJECT, "auto", subject_columns=SHOP_SUBJECT)
    assert report.verified
    assert report.checked_by_eraser == []
    assert shop.snapshot(not_pg) == shop.expected({SUBJECT})


# --- 3. writers adding references while the subject is erased -----------------------------

RACE_TABLES = ("accounts", "notes", "tasks", "task_steps")
RACE_DDL = (
    "CREATE TABLE accounts (id int PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL)",
    "CREATE INDEX ON accounts (tenant_id)",
    # No tenant column below accounts: these rows are the subject's only through it.
    "CREATE TABLE notes (id bigserial PRIMARY KEY,"
    " account_id int NOT NULL REFERENCES accounts, body text NOT NULL)",
    "CREATE INDEX ON notes (account_id)",
    "CREATE TABLE tasks (id bigserial PRIMARY KEY,"
    " account_id int REFERENCES accounts, title text NOT NULL)",
    "CREATE INDEX ON tasks (account_id)",
    "CREATE TABLE task_steps (id bigserial PRIMARY KEY,"
    " task_id bigint NOT NULL REFERENCES tasks, step int NOT NULL)",
    "CREATE INDEX ON task_steps (task_id)",
)
OTHER = 2


#: An application's hook on task_steps: tasks then keep the database's checks, so a
#: batch of accounts can only probe tasks, not take them along.
STEPS_TRIGGER = (
    "CREATE FUNCTION on_step_deleted() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RETURN OLD; END $$",
    "CREATE TRIGGER task_steps_deleted AFTER DELETE ON task_steps"
    " FOR EACH ROW EXECUTE FUNCTION on_step_deleted()",
)


def load_accounts(db: TargetDB, accounts: int, steps_trigger: bool = False) -> None:
    """``accounts`` accounts, one in eleven of tenant 2 and the rest the subject's; each
    with a note, every third with a task of two steps; a few tasks of no account."""
    db.run(
        *RACE_DDL,
        *(STEPS_TRIGGER if steps_trigger else ()),
        f"INSERT INTO accounts SELECT g, CASE WHEN mod(g, 11) = 0 THEN {OTHER} ELSE {SUBJECT}"
        f" END, 'account ' || g FROM generate_series(1, {int(accounts)}) g",
        "INSERT INTO notes (account_id, body) SELECT id, 'note ' || id FROM accounts",
        "INSERT INTO tasks (account_id, title) SELECT id, 'task ' || id FROM accounts"
        " WHERE mod(id, 3) = 0",
        "INSERT INTO tasks (account_id, title) SELECT NULL, 'unowned ' || g"
        " FROM generate_series(1, 5) g",
        "INSERT INTO task_steps (task_id, step) SELECT t.id, s FROM tasks t,"
        " generate_series(1, 2) s",
        "ANALYZE",
    )


def others_rows(engine: sa.Engine) -> Snapshot:
    """Every row that is not the subject's."""
    queries = {
        "accounts": f"SELECT * FROM accounts WHERE tenant_id <> {SUBJECT}",
        "notes": "SELECT n.* FROM notes n JOIN accounts a ON a.id = n.account_id"
        f" WHERE a.tenant_id <> {SUBJECT}",
        "tasks": "SELECT t.* FROM tasks t LEFT JOIN accounts a ON a.id = t.account_id"
        f" WHERE a.tenant_id IS DISTINCT FROM {SUBJECT}",
        "task_steps": "SELECT s.* FROM task_steps s JOIN tasks t ON t.id = s.task_id"
        f" LEFT JOIN accounts a ON a.id = t.account_id WHERE a.tenant_id IS DISTINCT FROM"
        f" {SUBJECT}",
    }
    with engine.connect() as conn:
        return {t: sorted(tuple(r) for r in conn.execute(sa.text(q))) for t, q in queries.items()}


def insert_reference(conn: sa.Connection, account: int, kind: str) -> list[tuple[str, int]]:
    """One note, or one task with two steps, for ``account``: the rows written."""
    if kind == "note":
        note = conn.execute(
            sa.text("INSERT INTO notes (account_id, body) VALUES (:a, 'late') RETURNING id"),
            {"a": account},
        ).scalar_one()
        return [("notes", int(note))]
    task = conn.execute(
        sa.text("INSERT INTO tasks (account_id, title) VALUES (:a, 'late') RETURNING id"),
        {"a": account},
    ).scalar_one()
    steps = conn.execute(
        sa.text("INSERT INTO task_steps (task_id, step) VALUES (:t, 1), (:t, 2) RETURNING id"),
        {"t": task},
    ).scalars()
    return [("tasks", int(task)), *(("task_steps", int(s)) for s in steps)]


@dataclass
class Writer:
    """Keeps adding notes and tasks (with steps) to accounts of the subject and of the
    other tenant, one committed transaction each. ``frontier``: pick the subject's
    accounts among the lowest ids left, the batch the erasure is working on."""

    url: str
    subject_accounts: list[int]
    other_accounts: list[int]
    frontier: bool
    seed: int
    stop: threading.Event
    writes: int = 0
    warmed_up: threading.Event = field(default_factory=threading.Event)
    #: (table, id, monotonic time of the commit) of every row written for the subject.
    subject_rows: list[tuple[str, int, float]] = field(default_factory=list)
    other_rows: list[tuple[str, int]] = field(default_factory=list)
    #: Subject inserts the database refused: the account was gone.
    refused: int = 0
    errors: list[BaseException] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
        finally:
            self.warmed_up.set()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        engine = create_engine(self.url, pool_size=1, max_overflow=0)
        deadline = time.monotonic() + THREAD_DEADLINE_SECONDS
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SET lock_timeout = '3s'")
                conn.commit()
                i = 0
                while not self.stop.is_set() and time.monotonic() < deadline:
                    i += 1
                    kind = rng.choice(("note", "task"))
                    subject = i % 4 != 0
                    try:
                        with conn.begin():
                            account = self._pick(conn, rng, subject)
                            written = insert_reference(conn, account, kind)
                    except sa.exc.IntegrityError as exc:
                        if subject and is_foreign_key_violation(exc):
                            self.refused += 1
                        else:
                            self.errors.append(exc)
                        continue
                    except sa.exc.DBAPIError as exc:
                        self.errors.append(exc)
                        continue
                    finally:
                        self.writes += 1
                        if self.writes == 20:
                            self.warmed_up.set()
                    if subject:
                        now = time.monotonic()
                        self.subject_rows += [(t, n, now) for t, n in written]
                    else:
                        self.other_rows += written
                    # Fast enough to hit the batch being removed, slow enough that the
                    # erasure's bounded retries (the database's way) get through.
                    time.sleep(rng.uniform(0, 0.01))
        finally:
            engine.dispose()

    def _pick(self, conn: sa.Connection, rng: random.Random, subject: bool) -> int:
        if not subject:
            return rng.choice(self.other_accounts)
        if self.frontier:
            ids = [
                int(a)
                for a in conn.execute(
                    sa.text("SELECT id FROM accounts WHERE tenant_id = :t ORDER BY id LIMIT 100"),
                    {"t": SUBJECT},
                ).scalars()
            ]
            if ids:
                return rng.choice(ids)
        return rng.choice(self.subject_accounts)


def accounts_by_tenant(db: TargetDB) -> tuple[list[int], list[int]]:
    """The ids of the subject's accounts and of the other tenant's."""
    with db.engine.connect() as conn:
        accounts = conn.execute(sa.text("SELECT id, tenant_id FROM accounts")).all()
    return [a for a, t in accounts if t == SUBJECT], [a for a, t in accounts if t == OTHER]


@dataclass
class Race:
    report: ErasureReport
    writers: list[Writer]
    #: When the erasure started and ended (``time.monotonic()``).
    started: float
    ended: float
    still_running: bool


def erase_while_writing(db: TargetDB, fk_checks: str, seeds: tuple[int, int]) -> Race:
    """Erase the subject (batches of 25) while two writers run: one aims at the
    accounts the erasure is about to reach, one at random. Each writer's own failures
    are asserted away: nothing but refused references to accounts already erased.
    (Batches run in the server finish 3,000 accounts in batches of 100 too soon for
    the writers to commit references to each kind of row meanwhile.)"""
    subject_accounts, other_accounts = accounts_by_tenant(db)
    plan = build_plan(reflect(db.engine), ["tenant_id"])
    stop = threading.Event()
    writers = [
        Writer(db.url, subject_accounts, other_accounts, frontier, seed, stop)
        for seed, frontier in zip(seeds, (True, False), strict=True)
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
    try:
        for t in threads:
            t.start()
        for w in writers:
            assert w.warmed_up.wait(THREAD_DEADLINE_SECONDS)
        started = time.monotonic()
        report = erase(
            db.engine, plan, SUBJECT, ExecutionOptions(batch_size=25, fk_checks=fk_checks)
        )
        ended = time.monotonic()
    finally:
        stop.set()
        for t in threads:
            t.join(THREAD_DEADLINE_SECONDS)
    for w in writers:
        assert w.error is None, repr(w.error)
        # The other tenant's inserts never fail, nor does anything but a refused
        # reference to an account already erased.
        assert w.errors == [], w.errors[:3]
    return Race(report, writers, started, ended, any(t.is_alive() for t in threads))


@pytest.mark.parametrize(
    "steps_trigger",
    [
        # Nothing keeps a table off the shortcut.
        False,
        # tasks keep the database's checks: each batch of accounts probes them, and a
        # task that appeared meanwhile sends the batch the database's way.
        True,
    ],
    ids=["plain", "tasks-probed"],
)
@pytest.mark.postgres
def test_references_written_during_the_erasure_are_never_left_dangling(
    pg: TargetDB, steps_trigger: bool
) -> None:
    load_accounts(pg, 3300, steps_trigger)
    subject_accounts, _ = accounts_by_tenant(pg)
    assert len(subject_accounts) == 3000
    before = others_rows(pg.engine)
    race = erase_while_writing(pg, "eraser", seeds=(1, 2))
    report, writers, started, ended = race.report, race.writers, race.started, race.ended
    assert not race.still_running

    # The race happened: references to the subject's accounts were committed while
    # the erasure ran (and others were refused once their account was gone).
    during = [r for w in writers for r in w.subject_rows if started <= r[2] <= ended]
    assert {t for t, _, _ in during} >= {"notes", "tasks", "task_steps"}, len(during)
    assert sum(w.refused for w in writers) > 0

    assert report.verified
    assert "public.accounts" in report.checked_by_eraser
    if steps_trigger:
        assert "public.tasks" not in report.checked_by_eraser
    assert rows_of(report, "public.accounts") == 3000
    checked, dangling = orphans(pg.engine)
    assert checked == 3
    assert dangling == {}
    assert count(pg.engine, "SELECT count(*) FROM accounts WHERE tenant_id = :t", t=SUBJECT) == 0
    for table in ("notes", "tasks", "task_steps"):
        ids = [n for w in writers for t, n, _ in w.subject_rows if t == table]
        left = count(pg.engine, f"SELECT count(*) FROM {table} WHERE id = ANY(:ids)", ids=ids)
        assert left == 0, table
    # The other tenant's rows: those from before byte-identical, the new ones all there.
    after = others_rows(pg.engine)
    for table, rows in before.items():
        assert set(rows) <= set(after[table]), table
    written = {(t, n) for w in writers for t, n in w.other_rows}
    assert len(written) > 0
    for table in ("notes", "tasks", "task_steps"):
        new = {n for t, n in written if t == table}
        assert {r[0] for r in after[table]} == {r[0] for r in before[table]} | new, table


@pytest.mark.parametrize("fk_checks", ["database", "auto"])
@pytest.mark.postgres
def test_a_batch_held_locked_makes_racing_writers_wait(
    pg: TargetDB, fk_checks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last attempt against writers that keep adding references holds the batch
    locked from a second connection while its references are cleared. Made the only
    attempt here, every batch not removed by a shortcut goes that way, under the same
    racing writers: no failure, nothing dangling, the writers' references to erased
    accounts refused or removed."""
    monkeypatch.setattr(batch_erasure, "_FK_RACE_ATTEMPTS", 1)
    load_accounts(pg, 3300, steps_trigger=True)
    held = []
    original = batch_erasure.BatchEraser._erase_rows_holding

    def counted(self: Any, table: Any, rows: Any) -> None:
        held.append(len(rows))
        original(self, table, rows)

    monkeypatch.setattr(batch_erasure.BatchEraser, "_erase_rows_holding", counted)
    race = erase_while_writing(pg, fk_checks, seeds=(3, 4))
    report, writers = race.report, race.writers
    assert sum(held) > 0  # the held way was taken
    assert sum(w.refused for w in writers) > 0
    assert report.verified
    assert orphans(pg.engine) == (3, {})
    assert count(pg.engine, "SELECT count(*) FROM accounts WHERE tenant_id = :t", t=SUBJECT) == 0
    for table in ("notes", "tasks", "task_steps"):
        ids = [n for w in writers for t, n, _ in w.subject_rows if t == table]
        left = count(pg.engine, f"SELECT count(*) FROM {table} WHERE id = ANY(:ids)", ids=ids)
        assert left == 0, table


def backends_waiting_on_a_lock(db: TargetDB) -> int:
    return count(
        db.engine,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'eraser' AND wait_event_type = 'Lock'"
        " AND wait_event IN ('transactionid', 'tuple')",
    )


@pytest.mark.parametrize(
    ("isolation", "fk_checks"),
    [
        # The usual default: each statement of a batch sees what committed before it.
        ("read committed", "eraser"),
        # Sessions that default to snapshot isolation: a statement after the DELETE
        # would not see the writer it waited for. ``auto`` must still end clean (the
        # database's own checks do: next case).
        ("repeatable read", "auto"),
        ("repeatable read", "database"),
    ],
)
@pytest.mark.postgres
def test_a_writer_the_batch_waits_for_is_seen_by_the_checks(
    pg: TargetDB, isolation: str, fk_checks: str
) -> None:
    """A writer holds the key lock of the first account of the subject (an uncommitted
    note and task) when the erasure reaches it: the batch's DELETE waits, the writer
    commits, and its rows must be removed with the account, not left behind."""
    load_accounts(pg, 330)
    plan = build_plan(reflect(pg.engine), ["tenant_id"])
    database = pg.engine.url.database
    pg.run(f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = '{isolation}'")
    pg.engine.dispose()  # new sessions take the database's default
    first = count(pg.engine, "SELECT min(id) FROM accounts WHERE tenant_id = :t", t=SUBJECT)

    writer = create_engine(pg.url)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            options = ExecutionOptions(batch_size=100, fk_checks=fk_checks, lock_timeout_ms=20000)
            result["report"] = erase(pg.engine, plan, SUBJECT, options)
        except BaseException as exc:
            result["error"] = exc

    eraser = threading.Thread(target=run, daemon=True)
    try:
        with writer.connect() as conn:
            with conn.begin():
                written = insert_reference(conn, first, "note")
                written += insert_reference(conn, first, "task")
                eraser.start()
                deadline = time.monotonic() + 20
                while not backends_waiting_on_a_lock(pg) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert backends_waiting_on_a_lock(pg) == 1
    finally:
        eraser.join(THREAD_DEADLINE_SECONDS)
        writer.dispose()
    assert "error" not in result, repr(result.get("error"))
    report = result["report"]
    assert report.verified
    if fk_checks == "eraser":
        assert "public.accounts" in report.checked_by_eraser
    assert orphans(pg.engine) == (3, {})
    assert count(pg.engine, "SELECT count(*) FROM accounts WHERE id = :a", a=first) == 0
    for table, n in written:
        assert count(pg.engine, f"SELECT count(*) FROM {table} WHERE id = :n", n=n) == 0, table


@pytest.mark.postgres
def test_snapshot_isolation_refuses_eraser_checks(pg: TargetDB) -> None:
    """Under repeatable read the shortcut's sweeps and probes would not see a writer
    the batch's DELETE waited for (the case above): ``eraser`` is refused, before any
    write."""
    load_accounts(pg, 110)
    plan = build_plan(reflect(pg.engine), ["tenant_id"])
    database = pg.engine.url.database
    pg.run(f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'")
    pg.engine.dispose()
    tables = sa.MetaData()
    tables.reflect(pg.engine)
    before = pg.snapshot(*tables.sorted_tables)
    with pytest.raises(ReferenceChecksUnavailable):
        erase(pg.engine, plan, SUBJECT, ExecutionOptions(fk_checks="eraser"))
    assert pg.snapshot(*tables.sorted_tables) == before


# --- 4. triggers (and rules) keep the database's checks -----------------------------------

#: What an application hangs on a table's deletions, as DDL for (table): each writes
#: one ``deletion_log`` row per deleted row. ``session_replication_role = replica``
#: silences both kinds.
HOOKS = {
    "trigger": lambda table: (
        f"CREATE TRIGGER {table}_log AFTER DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION log_deletion()"
    ),
    "rule": lambda table: (
        f"CREATE RULE {table}_log AS ON DELETE TO {table}"
        f" DO ALSO INSERT INTO deletion_log (tbl, row_id) VALUES ('{table}', OLD.id)"
    ),
}


@pytest.mark.parametrize("hook", ["trigger", "rule"])
@pytest.mark.postgres
def test_tables_with_delete_hooks_keep_the_database_checks_and_the_hooks_run(
    pg: TargetDB, hook: str
) -> None:
    """customers has a hook of its own, vendors a child with one, stores none. Every
    hook must run once per removed row."""
    ddl = ["CREATE TABLE deletion_log (id serial PRIMARY KEY, tbl text NOT NULL, row_id int)"]
    for parent, child in (
        ("customers", "customer_notes"),
        ("vendors", "vendor_docs"),
        ("stores", "store_notes"),
    ):
        ddl += [
            f"CREATE TABLE {parent} (id int PRIMARY KEY, tenant_id int NOT NULL)",
            f"CREATE INDEX ON {parent} (tenant_id)",
            f"CREATE TABLE {child} (id int PRIMARY KEY,"
            f" parent_id int NOT NULL REFERENCES {parent})",
            f"CREATE INDEX ON {child} (parent_id)",
            f"INSERT INTO {parent} SELECT g, 1 + mod(g, 3) FROM generate_series(1, 60) g",
            f"INSERT INTO {child} SELECT g, 1 + mod(g, 60) FROM generate_series(1, 240) g",
        ]
    ddl += [
        "CREATE FUNCTION log_deletion() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO deletion_log (tbl, row_id) VALUES (TG_TABLE_NAME, OLD.id);"
        " RETURN OLD; END $$",
        HOOKS[hook]("customers"),
        HOOKS[hook]("vendor_docs"),
    ]
    pg.run(*ddl)

    # ``auto`` as a superuser: the shortcut wherever it may go.
    report = run_erase(pg, SUBJECT, "auto", batch_size=8)
    assert report.verified
    assert "public.stores" in report.checked_by_eraser
    assert "public.customers" not in report.checked_by_eraser
    assert "public.vendors" not in report.checked_by_eraser
    for table in ("customers", "vendors", "stores"):
        assert rows_of(report, f"public.{table}") == 20, table
    for table in ("customer_notes", "vendor_docs", "store_notes"):
        assert rows_of(report, f"public.{table}") == 80, table
    with pg.engine.connect() as conn:
        logged: dict[str, int] = dict(
            conn.execute(sa.text("SELECT tbl, count(*) FROM deletion_log GROUP BY tbl")).all()
        )
    assert logged == {"customers": 20, "vendor_docs": 80}
    assert orphans(pg.engine) == (3, {})
    for table in ("customers", "vendors", "stores"):
        left = count(pg.engine, f"SELECT count(*) FROM {table} WHERE tenant_id = {SUBJECT}")
        assert left == 0, table
        assert count(pg.engine, f"SELECT count(*) FROM {table}") == 40, table


# --- 5. a reference from a schema the catalog did not read --------------------------------


@pytest.mark.postgres
def test_a_reference_from_an_unreflected_schema_keeps_the_database_checks(pg: TargetDB) -> None:
    pg.run(
        "CREATE TABLE customers (id int PRIMARY KEY, tenant_id int NOT NULL)",
        "CREATE INDEX ON customers (tenant_id)",
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers)",
        "CREATE INDEX ON orders (customer_id)",
        "CREATE TABLE order_items (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders)",
        "CREATE INDEX ON order_items (order_id)",
        'CREATE TABLE "other side".visits (id int PRIMARY KEY,'
        " customer_id int NOT NULL REFERENCES public.customers)",
        "INSERT INTO customers SELECT g, 1 + mod(g, 3) FROM generate_series(1, 30) g",
        "INSERT INTO orders SELECT g, 1 + mod(g, 30) FROM generate_series(1, 90) g",
        "INSERT INTO order_items SELECT g, 1 + mod(g, 90) FROM generate_series(1, 180) g",
        # Visits of tenant 2's customers only (ids 1, 4, 7, ...).
        'INSERT INTO "other side".visits SELECT g, g FROM generate_series(1, 30) g'
        " WHERE mod(g, 3) = 1",
    )
    visits = 'SELECT count(*) FROM "other side".visits'

    report = run_erase(pg, SUBJECT, "eraser", batch_size=4, schemas=["public"])
    assert report.verified
    assert "public.orders" in report.checked_by_eraser
    assert "public.customers" not in report.checked_by_eraser
    assert rows_of(report, "public.customers") == 10
    assert rows_of(report, "public.orders") == 30
    assert count(pg.engine, visits) == 10
    assert orphans(pg.engine) == (3, {})

    # Now a visit references a customer of tenant 3: the database refuses that
    # customer's deletion; the erasure must fail loudly and leave no orphan.
    pg.run('INSERT INTO "other side".visits VALUES (1000, 2)')
    with pytest.raises(DatabaseFailure) as refused:
        run_erase(pg, 3, "eraser", batch_size=4, schemas=["public"])
    assert is_foreign_key_violation(refused.value.driver_error)
    assert orphans(pg.engine) == (3, {})
    assert count(pg.engine, "SELECT count(*) FROM customers WHERE id = 2") == 1
    assert count(pg.engine, visits) == 11


# --- 6. a fan-out wider than one transaction should take ------------------------------------


#: Rows of a fan-out one transaction may take, as a multiple of the batch size: a
#: batch's transaction stays short whatever the fan-out (the engine aims well below).
TXN_ROWS_CEILING = 20


@pytest.mark.parametrize(
    "children",
    [
        # 4 per parent: a batch of 10 parents takes 40 along, in one transaction.
        4,
        # 100 per parent: 1,000 per batch of 10, too many for one transaction.
        100,
        # 400 per parent: too many even for a batch of one parent.
        400,
    ],
)
@pytest.mark.postgres
def test_a_wide_leaf_child_is_removed_in_bounded_transactions(
    pg: TargetDB, children: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leaf child taken along with each batch of its parents (``sweep``): however wide
    the fan-out, every row goes, and no transaction takes more than a few batches' worth
    (progress reports each committed transaction's rows per table: the server-side loop
    is made to report after every batch)."""
    monkeypatch.setattr(server_batches, "_LOOP_SECONDS", 0.0)
    pg.run(
        "CREATE TABLE posts (id int PRIMARY KEY, tenant_id int NOT NULL, title text NOT NULL)",
        "CREATE INDEX ON posts (tenant_id)",
        "CREATE TABLE comments (id int PRIMARY KEY,"
        " post_id int NOT NULL REFERENCES posts, body text NOT NULL)",
        "CREATE INDEX ON comments (post_id)",
        # 35 posts of the subject, 5 of tenant 2, interleaved.
        "INSERT INTO posts SELECT g, CASE WHEN mod(g, 8) = 0 THEN 2 ELSE 1 END, 'post ' || g"
        " FROM generate_series(1, 40) g",
        f"INSERT INTO comments SELECT p.id * 1000 + c, p.id, 'comment ' || c FROM posts p,"
        f" generate_series(1, {int(children)}) c",
    )
    others = "SELECT p.*, c.* FROM posts p JOIN comments c ON c.post_id = p.id WHERE tenant_id = 2"
    with pg.engine.connect() as conn:
        before = sorted(conn.execute(sa.text(others)).all())
    per_transaction: list[int] = []

    def progress(p: Progress) -> None:
        if p.table == "public.comments":
            per_transaction.append(p.rows)

    report = run_erase(pg, SUBJECT, "eraser", batch_size=10, progress=progress)
    assert report.verified
    assert rows_of(report, "public.posts") == 35
    assert rows_of(report, "public.comments") == 35 * children
    assert report.total_rows == 35 * (children + 1)
    assert sum(per_transaction) == 35 * children
    assert max(per_transaction) <= min(10 * children, 10 * TXN_ROWS_CEILING)
    assert "public.posts" in report.checked_by_eraser
    assert orphans(pg.engine) == (1, {})
    with pg.engine.connect() as conn:
        assert sorted(conn.execute(sa.text(others)).all()) == before
        left = conn.execute(sa.text("SELECT count(*) FROM posts WHERE tenant_id = 1")).scalar()
    assert left == 0
