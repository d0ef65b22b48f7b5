"""``worker.faults.classify`` against failures provoked on the PostgreSQL and MariaDB
servers: lock timeouts, a terminated backend, a deadlock, missing privileges, tables
and databases, foreign-key violations.

Each case checks the kind (what the task does next) and that the description, which is
stored and shown, names objects but never row values or a DSN.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.conftest import TargetDB
from tests.fault_checks import KEY, ROW_VALUE, assert_safe, connection_fault, raised
from worker.faults import FaultKind, classify


def _pg_accounts(pg: TargetDB) -> None:
    pg.run(
        "CREATE TABLE customer_secrets (id int PRIMARY KEY, email text NOT NULL)",
        f"INSERT INTO customer_secrets VALUES (1, '{ROW_VALUE}'), (2, 'bob@example.com')",
    )


@pytest.mark.postgres
def test_pg_lock_timeout_is_transient(pg: TargetDB) -> None:
    _pg_accounts(pg)
    with pg.engine.connect() as holder, holder.begin():
        holder.exec_driver_sql("SELECT * FROM customer_secrets WHERE id = 1 FOR UPDATE")
        with pg.engine.connect() as waiter, waiter.begin():
            waiter.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
            exc = raised(
                lambda: waiter.exec_driver_sql(
                    "SELECT * FROM customer_secrets WHERE id = 1 FOR UPDATE"
                )
            )
    fault = classify(exc)
    assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "55P03")
    assert fault.description.startswith("lock not available (lock timeout) (SQLSTATE 55P03)")
    assert_safe(fault)


@pytest.mark.postgres
def test_pg_terminated_backend_is_transient(pg: TargetDB) -> None:
    with pg.engine.connect() as victim:
        pid = victim.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        victim.rollback()
        pg.run(f"SELECT pg_terminate_backend({int(pid or 0)})")
        exc = raised(lambda: victim.exec_driver_sql("SELECT 1"))
    assert isinstance(exc, sa.exc.DBAPIError)
    fault = classify(exc)
    assert fault.kind is FaultKind.TRANSIENT
    # psycopg2 reports the termination (57P01) or just the closed socket (no SQLSTATE).
    assert fault.code in {"57P01", "OperationalError", "InterfaceError"}
    assert_safe(fault)


@pytest.mark.postgres
def test_pg_deadlock_is_transient(pg: TargetDB) -> None:
    _pg_accounts(pg)
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def lock(first: int, second: int) -> None:
        with pg.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL deadlock_timeout = '50ms'")
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")  # never hang the test
            select = "SELECT * FROM customer_secrets WHERE id = %s FOR UPDATE"
            conn.exec_driver_sql(select, (first,))
            barrier.wait()
            try:
                conn.exec_driver_sql(select, (second,))
            except Exception as exc:
                errors.append(exc)
                raise

    threads = [
        threading.Thread(target=_quietly(lambda: lock(1, 2))),
        threading.Thread(target=_quietly(lambda: lock(2, 1))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 1  # the server picks one victim; the other transaction goes on
    fault = classify(errors[0])
    assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "40P01")
    assert_safe(fault)


def _quietly(target: Callable[[], None]) -> Callable[[], None]:
    """A thread body whose exception is kept by the test instead of printed as a warning."""

    def run() -> None:
        with contextlib.suppress(Exception):
            target()

    return run


@contextmanager
def _role_without_privileges(pg: TargetDB) -> Iterator[str]:
    # Roles belong to the cluster, not the test's database: a unique name, dropped after.
    role = f"eraser_noperm_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    pg.run(f'CREATE ROLE "{role}"')
    try:
        yield role
    finally:
        pg.run(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.postgres
def test_pg_permission_denied_is_permanent_and_names_the_table(pg: TargetDB) -> None:
    _pg_accounts(pg)
    with _role_without_privileges(pg) as role:
        with pg.engine.connect() as conn:
            conn.exec_driver_sql(f'SET ROLE "{role}"')
            exc = raised(
                lambda: conn.exec_driver_sql(
                    f"DELETE FROM customer_secrets WHERE email = '{ROW_VALUE}'"
                )
            )
            conn.rollback()
            conn.exec_driver_sql("RESET ROLE")
    fault = classify(exc)
    assert (fault.kind, fault.code) == (FaultKind.PERMANENT, "42501")
    assert "permission denied" in fault.description
    assert "customer_secrets" in fault.description
    assert_safe(fault)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("statements", "kind", "code", "named"),
    [
        # a table the plan expected is gone
        (["DELETE FROM no_such_table"], FaultKind.PERMANENT, "42P01", "no_such_table"),
        # a column the plan expected is gone
        (["SELECT no_such_column FROM t"], FaultKind.PERMANENT, "42703", "no_such_column"),
        # a replica or a read-only transaction refuses writes
        (["SET TRANSACTION READ ONLY", "DELETE FROM t"], FaultKind.PERMANENT, "25006", None),
        # a statement cancelled by statement_timeout may pass next time
        (
            ["SET LOCAL statement_timeout = '20ms'", "SELECT pg_sleep(2)"],
            FaultKind.TRANSIENT,
            "57014",
            None,
        ),
    ],
)
def test_pg_sqlstates(
    pg: TargetDB, statements: list[str], kind: FaultKind, code: str, named: str | None
) -> None:
    pg.run(
        "CREATE TABLE t (id int PRIMARY KEY, email text)",
        f"INSERT INTO t VALUES (1, '{ROW_VALUE}')",
    )
    with pg.engine.connect() as conn, conn.begin():
        for statement in statements[:-1]:
            conn.exec_driver_sql(statement)
        exc = raised(lambda: conn.exec_driver_sql(statements[-1]))
    fault = classify(exc)
    assert (fault.kind, fault.code) == (kind, code)
    assert f"(SQLSTATE {code})" in fault.description
    if named is not None:
        assert named in fault.description
    assert_safe(fault)


@pytest.mark.postgres
def test_pg_foreign_key_violation_hides_the_key_value(pg: TargetDB) -> None:
    pg.run(
        "CREATE TABLE parents (id int PRIMARY KEY)",
        "CREATE TABLE children (id int PRIMARY KEY, parent_id int REFERENCES parents(id))",
        f"INSERT INTO parents VALUES ({KEY})",
        f"INSERT INTO children VALUES (1, {KEY})",
    )
    with pg.engine.connect() as conn:
        exc = raised(lambda: conn.exec_driver_sql(f"DELETE FROM parents WHERE id = {KEY}"))
    assert str(KEY) in str(exc)  # the driver's detail quotes the key...
    fault = classify(exc)
    assert (fault.kind, fault.code) == (FaultKind.PERMANENT, "23503")
    assert_safe(fault)  # ...the description does not


@pytest.mark.postgres
@pytest.mark.parametrize("part", ["database", "username"])
def test_pg_missing_database_or_role_is_permanent(pg: TargetDB, part: str) -> None:
    missing = f"eraser_missing_{uuid.uuid4().hex[:8]}"
    if part == "database":
        url = pg.engine.url.set(database=missing)
    else:
        url = pg.engine.url.set(username=missing)
    fault = connection_fault(url)
    assert fault.kind is FaultKind.PERMANENT
    assert fault.description == "cannot connect: the database or role does not exist"


@pytest.mark.mysql
def test_mysql_lock_wait_timeout_is_transient(mysql: TargetDB) -> None:
    mysql.run(
        "CREATE TABLE customer_secrets (id int PRIMARY KEY, email varchar(100)) ENGINE=InnoDB",
        f"INSERT INTO customer_secrets VALUES (1, '{ROW_VALUE}')",
    )
    with mysql.engine.connect() as holder, holder.begin():
        holder.exec_driver_sql("SELECT * FROM customer_secrets WHERE id = 1 FOR UPDATE")
        with mysql.engine.connect() as waiter:
            waiter.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            waiter.commit()
            with waiter.begin():
                exc = raised(
                    lambda: waiter.exec_driver_sql(
                        f"DELETE FROM customer_secrets WHERE email = '{ROW_VALUE}'"
                    )
                )
    fault = classify(exc)
    assert (fault.kind, fault.code) == (FaultKind.TRANSIENT, "1205")
    assert_safe(fault)


@pytest.mark.mysql
def test_mysql_unknown_table_is_permanent(mysql: TargetDB) -> None:
    with mysql.engine.connect() as conn:
        exc = raised(lambda: conn.exec_driver_sql("DELETE FROM no_such_table"))
    fault = classify(exc)
    assert (fault.kind, fault.code) == (FaultKind.PERMANENT, "1146")
    assert "no_such_table" in fault.description


@pytest.mark.mysql
def test_mysql_foreign_key_violation_is_permanent(mysql: TargetDB) -> None:
    mysql.run(
        "CREATE TABLE parents (id int PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE children (id int PRIMARY KEY, parent_id int, "
        "FOREIGN KEY (parent_id) REFERENCES parents(id)) ENGINE=InnoDB",
        f"INSERT INTO parents VALUES ({KEY})",
        f"INSERT INTO children VALUES (1, {KEY})",
    )
    with mysql.engine.connect() as conn:
        exc = raised(lambda: conn.exec_driver_sql(f"DELETE FROM parents WHERE id = {KEY}"))
    fault = classify(exc)
    assert (fault.kind, fault.code) == (FaultKind.PERMANENT, "1451")
    assert_safe(fault)


@pytest.mark.mysql
def test_mysql_unknown_database_is_permanent(mysql: TargetDB) -> None:
    url = mysql.engine.url.set(database=f"eraser_missing_{uuid.uuid4().hex[:8]}")
    fault = connection_fault(url)
    assert (fault.kind, fault.code) == (FaultKind.PERMANENT, "1049")
