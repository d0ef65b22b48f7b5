"""Compressed full-page images (``wal_compression``) for an erasure's batches, on a real
PostgreSQL server.

* twin databases erased with and without it, by the server-side loop and from the
  client: the same rows go, verified, and the compressed erasure writes far less WAL;
* a role that may not set it erases uncompressed, without an error, until granted
  ``SET ON PARAMETER wal_compression``; a database that compresses already keeps its
  own method; the registry's ``compress_wal = false`` and the CLI's
  ``--no-compress-wal`` reach the engine;
* nothing leaks into the session: every batch sets it for its own transaction.
"""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from api.cli import EXIT_OK, main
from models.erasure import ErasureReport
from models.registry import Service
from tests.conftest import PG_ADMIN_URL, TargetDB
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan
from worker.service import run_service

pytestmark = pytest.mark.postgres

COLUMNS = ["tenant_id", "tenants.id"]
SUBJECT = 1
TENANTS = 3
ACCOUNTS = 3000
ENTRIES_PER_ACCOUNT = 4
#: One tenant's rows: the tenant, a third of the accounts, a third of the entries.
TENANT_ROWS = 1 + ACCOUNTS // TENANTS + ACCOUNTS * ENTRIES_PER_ACCOUNT // TENANTS

SCHEMA = """
CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE accounts (
    id bigint PRIMARY KEY, tenant_id int NOT NULL REFERENCES tenants,
    email text NOT NULL, note text NOT NULL);
CREATE TABLE entries (
    id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts,
    body text NOT NULL);
CREATE INDEX ON accounts (tenant_id);
CREATE INDEX ON entries (account_id);
"""


def _load(db: TargetDB) -> None:
    """Three tenants whose accounts and entries are interleaved in the heap, as rows
    arrive over time: erasing one touches nearly every page."""
    db.run(
        SCHEMA,
        f"INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(1, {TENANTS}) g",
        "INSERT INTO accounts SELECT g, 1 + mod(g, 3), 'user' || g || '@example.com',"
        f" repeat('note of account ' || g || ' ', 6) FROM generate_series(1, {ACCOUNTS}) g",
        "INSERT INTO entries SELECT g, 1 + mod(g, 3000),"
        f" repeat('entry ' || g || ' of the ledger ', 5)"
        f" FROM generate_series(1, {ACCOUNTS * ENTRIES_PER_ACCOUNT}) g",
    )


def _tables(db: TargetDB) -> list[sa.Table]:
    md = sa.MetaData()
    md.reflect(db.engine)
    return [md.tables[name] for name in ("tenants", "accounts", "entries")]


def _erase_measuring_wal(db: TargetDB, options: ExecutionOptions) -> tuple[ErasureReport, int]:
    """Erase the subject right after a checkpoint (so every page it changes is written
    whole to the WAL, as on a live server between checkpoints); the WAL it wrote.

    The WAL is the whole cluster's, so another session's writes (a test running beside
    this one) would count too: with ``pg_walinspect``, only the records that change
    ``db``'s own pages are summed."""
    plan = build_plan(reflect(db.engine), COLUMNS)
    with db.engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        inspect = _walinspect(conn)
        conn.exec_driver_sql("CHECKPOINT")
        before = conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar_one()
    report = erase(db.engine, plan, SUBJECT, options)
    with db.engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        after = conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar_one()
        if not inspect:
            lsns = {"a": after, "b": before}
            diff = sa.text("SELECT CAST(:a AS pg_lsn) - CAST(:b AS pg_lsn)")
            return report, int(conn.execute(diff, lsns).scalar_one())
        # The records read must be flushed (the WAL writer does within a few 200 ms).
        flushed = sa.text("SELECT pg_current_wal_flush_lsn() >= CAST(:a AS pg_lsn)")
        for _ in range(100):
            if conn.execute(flushed, {"a": after}).scalar_one():
                break
            time.sleep(0.05)
        own = conn.execute(
            sa.text(
                "SELECT coalesce(sum(record_length), 0) FROM pg_get_wal_records_info("
                " CAST(:b AS pg_lsn), CAST(:a AS pg_lsn))"
                " WHERE block_ref LIKE '%/' || ("
                "  SELECT oid FROM pg_database WHERE datname = current_database()) || '/%'"
            ),
            {"a": after, "b": before},
        ).scalar_one()
    return report, int(own)


def _walinspect(conn: sa.Connection) -> bool:
    """Whether ``pg_walinspect`` (contrib, PostgreSQL 15) is there, created if need be."""
    try:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    except sa.exc.DBAPIError:
        return False
    return True


def _session_setting(db: TargetDB) -> str:
    """``wal_compression`` of a pooled connection of ``db``'s engine, after an erasure."""
    with db.engine.connect() as conn:
        return str(conn.exec_driver_sql("SHOW wal_compression").scalar_one())


@pytest.mark.parametrize("server_batches", [True, False], ids=["server-loop", "client"])
def test_compressed_batches_remove_the_same_rows_with_far_less_wal(
    pg: TargetDB, pg_twin: TargetDB, server_batches: bool
) -> None:
    _load(pg)
    _load(pg_twin)
    compressed, small = _erase_measuring_wal(
        pg, ExecutionOptions(batch_size=500, server_batches=server_batches)
    )
    plain, large = _erase_measuring_wal(
        pg_twin,
        ExecutionOptions(batch_size=500, server_batches=server_batches, compress_wal=False),
    )
    assert compressed.verified
    assert plain.verified
    assert compressed.total_rows == plain.total_rows == TENANT_ROWS
    assert compressed.tables == plain.tables
    assert pg.snapshot(*_tables(pg)) == pg_twin.snapshot(*_tables(pg_twin))
    assert compressed.wal_compression == "lz4"
    assert plain.wal_compression == ""
    assert bool(compressed.batched_in_server) is server_batches
    # The full-page images are most of an erasure's WAL; lz4 takes well over a third
    # off it (about 45% in bench/erase.py).
    assert small < 0.7 * large, (small, large)
    # Each batch set it for its own transaction: the pooled session is as it was.
    assert _session_setting(pg) == "off"


def test_a_role_that_may_not_set_it_erases_uncompressed_until_granted(
    pg_plain: TargetDB,
) -> None:
    db = pg_plain
    _load(db)
    plan = build_plan(reflect(db.engine), COLUMNS)
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=500))
    assert report.verified
    assert report.total_rows == TENANT_ROWS
    assert report.wal_compression == ""

    role = db.engine.url.username
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'GRANT SET ON PARAMETER wal_compression TO "{role}"')
        report = erase(db.engine, plan, 2, ExecutionOptions(batch_size=500))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'REVOKE SET ON PARAMETER wal_compression FROM "{role}"')
        admin.dispose()
    assert report.verified
    assert report.total_rows == TENANT_ROWS
    assert report.wal_compression == "lz4"


def test_a_database_that_compresses_already_keeps_its_own_method(pg: TargetDB) -> None:
    _load(pg)
    name = sa.make_url(pg.url).database
    pg.run(f"ALTER DATABASE \"{name}\" SET wal_compression = 'pglz'")
    engine = create_engine(pg.url)
    try:
        plan = build_plan(reflect(engine), COLUMNS)
        report = erase(engine, plan, SUBJECT, ExecutionOptions(batch_size=500))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW wal_compression").scalar_one() == "pglz"
    finally:
        engine.dispose()
    assert report.verified
    assert report.wal_compression == "pglz"


def test_nothing_written_nothing_compressed(pg: TargetDB) -> None:
    _load(pg)
    plan = build_plan(reflect(pg.engine), COLUMNS)
    report = erase(pg.engine, plan, 99, ExecutionOptions())
    assert report.verified
    assert report.total_rows == 0
    assert report.wal_compression == ""


def test_the_registry_and_the_cli_can_turn_it_off(
    pg: TargetDB, pg_twin: TargetDB, capsys: pytest.CaptureFixture[str]
) -> None:
    _load(pg)
    _load(pg_twin)
    for compress in (True, False):
        service = Service(url_env="UNUSED", batch_size=500, compress_wal=compress)
        report = run_service(
            pg.engine, "ledger", service, "tenant", COLUMNS, str(3 - compress), False
        )
        assert report.verified
        assert report.total_rows == TENANT_ROWS
        assert report.wal_compression == ("lz4" if compress else "")

    args = ["--subject-column", "tenant_id", "--subject-column", "tenants.id"]
    args += ["--batch-size", "500", "--json", "--progress", "never", "--yes"]
    assert main(["erase", "--db", pg_twin.url, *args, "--subject", "1"]) == EXIT_OK
    compressed = json.loads(capsys.readouterr().out)
    assert main(["erase", "--db", pg_twin.url, *args, "--subject", "2", "--no-compress-wal"]) == (
        EXIT_OK
    )
    plain = json.loads(capsys.readouterr().out)
    assert compressed["verified"]
    assert plain["verified"]
    assert compressed["total_rows"] == plain["total_rows"] == TENANT_ROWS
    assert compressed["wal_compression"] == "lz4"
    assert plain["wal_compression"] == ""
