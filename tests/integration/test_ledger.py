"""The target's ledger (``worker.execution.ledger``) on real servers: every batch of
an erasure writes its counts in its own transaction, on PostgreSQL (client batches
and the server-side loop), MariaDB and SQLite; what the ledger holds adds up to the
report's counts; reflection never sees the table; the task's session lock keeps a
second execution waiting; a role that may not create it erases without one."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from models.erasure import ErasureReport
from tests.conftest import PG_ADMIN_URL, TargetDB
from worker.catalog.reflection import LEDGER_TABLE, reflect
from worker.database import create_engine
from worker.dialects import dialect_of
from worker.exceptions import SubjectLocked
from worker.execution import ledger
from worker.execution.erasure import erase
from worker.execution.ledger import Ledger
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

SCHEMA = [
    "CREATE TABLE tenants (id VARCHAR(40) PRIMARY KEY)",
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY,"
    " tenant_id VARCHAR(40) NOT NULL REFERENCES tenants(id))",
    "CREATE TABLE items (id INTEGER PRIMARY KEY,"
    " account_id INTEGER NOT NULL REFERENCES accounts(id))",
    "CREATE INDEX accounts_tenant ON accounts(tenant_id)",
    "CREATE INDEX items_account ON items(account_id)",
]


def _load(db: TargetDB, accounts: int = 30, items: int = 7) -> None:
    db.run(*SCHEMA)
    md = sa.MetaData()
    md.reflect(db.engine)
    db.insert(md.tables["tenants"], [{"id": "acme"}, {"id": "other"}])
    db.insert(
        md.tables["accounts"],
        [{"id": i, "tenant_id": "acme" if i % 3 else "other"} for i in range(1, accounts + 1)],
    )
    db.insert(
        md.tables["items"],
        [
            {"id": a * 100 + j, "account_id": a}
            for a in range(1, accounts + 1)
            for j in range(items)
        ],
    )


def _erase(db: TargetDB, options: ExecutionOptions) -> ErasureReport:
    plan = build_plan(reflect(db.engine), ["tenant_id", "tenants.id"])
    return erase(db.engine, plan, "acme", options)


def _removed(report: ErasureReport) -> dict[str, int]:
    return {f"{t.table}:{t.action}": t.rows for t in report.tables if t.rows}


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_the_ledger_adds_up_to_the_report(backend: str, request: pytest.FixtureRequest) -> None:
    db: TargetDB = request.getfixturevalue(
        {"postgresql": "pg", "mysql": "mysql"}.get(backend, "sqlite_db")
    )
    _load(db)
    ready: list[bool] = []
    kept = Ledger("job-1:shop", "lease-1", on_ready=ready.append)

    report = _erase(db, ExecutionOptions(batch_size=4, ledger=kept))

    assert ready == [True]
    entries = ledger.read(db.engine, "job-1:shop")
    assert len(entries) >= 5
    assert {e.execution for e in entries} == {"lease-1"}
    assert kept.seq == max(e.seq for e in entries)
    assert ledger.fold(entries, 0) == (kept.seq, _removed(report))
    assert report.total_rows == 20 + 20 * 7 + 1
    # Reflection, and so every plan and fingerprint, never includes the ledger.
    catalog = reflect(db.engine)
    assert all(t.name != LEDGER_TABLE for t in catalog.tables)
    ledger.forget(db.engine, "job-1:shop")
    assert ledger.read(db.engine, "job-1:shop") == []


@pytest.mark.postgres
def test_the_server_loop_writes_its_calls_tallies(pg: TargetDB) -> None:
    _load(pg, accounts=60, items=9)
    kept = Ledger("job-2:shop", "lease-2")

    report = _erase(pg, ExecutionOptions(batch_size=5, fk_checks="eraser", ledger=kept))

    assert report.batched_in_server
    entries = ledger.read(pg.engine, "job-2:shop")
    assert any(ledger.CALL in e.counts for e in entries)
    assert ledger.fold(entries, 0) == (kept.seq, _removed(report))
    # Folding from any watermark adds what the rows past it hold.
    middle = entries[len(entries) // 2].seq
    head = ledger.fold([e for e in entries if e.seq <= middle], 0)[1]
    tail = ledger.fold(entries, middle)[1]
    summed = {k: head.get(k, 0) + tail.get(k, 0) for k in {*head, *tail}}
    assert {k: v for k, v in summed.items() if v} == _removed(report)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_second_execution_waits_for_the_task_lock(
    backend: str, request: pytest.FixtureRequest
) -> None:
    db: TargetDB = request.getfixturevalue("pg" if backend == "postgresql" else "mysql")
    dialect = dialect_of(db.engine)
    first = Ledger("job-3:shop", "lease-a")
    with db.engine.connect() as holder:
        first.start(holder, dialect, 1)
        ready: list[bool] = []
        second = Ledger("job-3:shop", "lease-b", on_ready=ready.append)
        started = time.monotonic()
        with db.engine.connect() as conn, pytest.raises(SubjectLocked):
            second.start(conn, dialect, 0.5)
        assert time.monotonic() - started >= 0.5
        # Not told it keeps a ledger: an execution without the lock settles nothing
        # (the holder may still be committing batches).
        assert ready == []
        # Once the first session ends (its connection gone), the second gets it.
        released = threading.Timer(0.3, holder.invalidate)
        released.start()
        with db.engine.connect() as conn:
            second.start(conn, dialect, 10)
            assert ready == [True]
            second.stop(conn, dialect)
        released.join()


@pytest.mark.postgres
@pytest.mark.parametrize("made_by_another_role", [False, True])
def test_a_role_that_may_not_keep_it_erases_without_one(
    pg_plain: TargetDB, made_by_another_role: bool
) -> None:
    role = str(pg_plain.engine.url.username)
    admin = create_engine(str(sa.make_url(PG_ADMIN_URL).set(database=pg_plain.engine.url.database)))
    with admin.begin() as conn:
        # The role's tables in a schema it may use but not create in.
        conn.exec_driver_sql("CREATE SCHEMA app")
        conn.exec_driver_sql("SET search_path = app")
        for statement in SCHEMA:
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA app TO "{role}"')
        conn.exec_driver_sql(
            f'GRANT SELECT, DELETE, UPDATE ON ALL TABLES IN SCHEMA app TO "{role}"'
        )
        conn.exec_driver_sql(f'ALTER ROLE "{role}" SET search_path = app')
        if made_by_another_role:  # there, but this role was granted nothing on it
            ledger.LEDGER.create(conn)
        conn.exec_driver_sql("INSERT INTO tenants VALUES ('acme'), ('other')")
        conn.exec_driver_sql(
            "INSERT INTO accounts SELECT i, CASE WHEN i %% 3 > 0 THEN 'acme' ELSE 'other' END"
            " FROM generate_series(1, 30) i"
        )
        conn.exec_driver_sql(
            "INSERT INTO items SELECT a * 100 + j, a FROM generate_series(1, 30) a,"
            " generate_series(0, 6) j"
        )
    pg_plain.engine.dispose()
    ready: list[bool] = []
    kept = Ledger("job-4:shop", "lease-4", on_ready=ready.append)

    report = _erase(pg_plain, ExecutionOptions(batch_size=4, ledger=kept))

    assert ready == [False]
    assert report.verified
    assert report.total_rows == 20 + 20 * 7 + 1
    reader = admin if made_by_another_role else pg_plain.engine
    assert ledger.read(reader, "job-4:shop") == []
    admin.dispose()


@pytest.mark.postgres
def test_only_the_default_schemas_ledger_is_left_out(pg: TargetDB) -> None:
    """A table of the service's own named ``eraser_ledger`` in another schema is data
    like any other: reflection leaves out only the one Eraser makes."""
    pg.run(
        "CREATE SCHEMA app",
        f"CREATE TABLE app.{LEDGER_TABLE} (id INTEGER PRIMARY KEY)",
        f"CREATE TABLE {LEDGER_TABLE} (task TEXT)",
    )
    names = {(t.schema, t.name) for t in reflect(pg.engine).tables}
    assert ("app", LEDGER_TABLE) in names
    assert ("public", LEDGER_TABLE) not in names
