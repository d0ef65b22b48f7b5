"""Erasure connections (``Dialect.erasure_session``, ``worker.database``): session
settings put back before the pool, and row-level security that would hide rows made
to fail.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.conftest import TargetDB
from tests.integration.outcomes import SUBJECT, rows
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.faults import DatabaseFailure
from worker.planning.building import build_plan


def _session_setting(conn: sa.Connection, backend: str) -> str:
    if backend == "mysql":
        return str(conn.exec_driver_sql("SELECT @@session.innodb_lock_wait_timeout").scalar())
    return str(conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar())


@pytest.mark.parametrize("db", ["mysql", "postgresql"], indirect=True)
def test_erasure_session_settings_are_reset_before_the_pool(db: TargetDB) -> None:
    """``session_setup`` changed the erasure connection's lock wait (MariaDB) or its
    parallel workers (PostgreSQL) for good, and the pool handed it on like that."""
    if db.backend == "postgresql":
        # A per-database default that differs from the erasure's 0, whatever the server.
        db.run(f'ALTER DATABASE "{db.engine.url.database}" SET max_parallel_workers_per_gather = 3')
        fresh = create_engine(db.url, poolclass=NullPool)
        with fresh.connect() as conn:
            expected = _session_setting(conn, db.backend)
        fresh.dispose()
        assert expected == "3"
        timeout_ms = 1000
    else:
        with db.engine.connect() as conn:
            server = conn.exec_driver_sql("SELECT @@global.innodb_lock_wait_timeout")
            expected = str(server.scalar())
        timeout_ms = 1000 if expected != "1" else 2000
    db.run(
        "CREATE TABLE t (id INT PRIMARY KEY, tenant_id INT NOT NULL)",
        "CREATE INDEX t_tenant ON t (tenant_id)",
        "INSERT INTO t VALUES (1, 42), (2, 7)",
    )
    # Two connections: the erasure's own, and the one holding the subject lock (with
    # pool_size=1 the lock's checkout would wait for the erasure's own connection).
    engine = create_engine(db.url, pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        plan = build_plan(reflect(engine), ["tenant_id"])
        report = erase(engine, plan, SUBJECT, ExecutionOptions(lock_timeout_ms=timeout_ms))
        assert report.verified
        assert report.total_rows == 1
        # Every pooled connection at once: the erasure's is among them.
        with ExitStack() as stack:
            conns = [stack.enter_context(engine.connect()) for _ in range(2)]
            assert [_session_setting(c, db.backend) for c in conns] == [expected] * 2
    finally:
        engine.dispose()
    assert rows(db, "t") == [(2, 7)]


def test_pg_row_level_security_hiding_subject_rows_fails_instead_of_skipping_them(
    pg_plain: TargetDB,
) -> None:
    """A policy hid row 2 from the erasure's role, which reported the subject gone."""
    pg_plain.run(
        "CREATE TABLE t (id int PRIMARY KEY, tenant_id int, hidden bool)",
        "CREATE INDEX ON t (tenant_id)",
        "INSERT INTO t VALUES (1, 42, false), (2, 42, true), (3, 7, false)",
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE t FORCE ROW LEVEL SECURITY",
        "CREATE POLICY vis ON t USING (NOT hidden)",
    )
    plan = build_plan(reflect(pg_plain.engine), ["tenant_id"])
    for run in (dry_run, erase):
        with pytest.raises(DatabaseFailure, match='row-level security policy for table "t"'):
            run(pg_plain.engine, plan, SUBJECT)
    admin = create_engine(sa.make_url(pg_plain.url).set(username="postgres"))
    try:
        with admin.connect() as conn:
            kept = conn.exec_driver_sql("SELECT id FROM t ORDER BY id").scalars().all()
    finally:
        admin.dispose()
    assert kept == [1, 2, 3]
