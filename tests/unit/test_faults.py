"""``worker.faults.classify`` without a database server: Eraser's own exceptions, plain
Python and broker errors, refused connections, and SQLite's failures.

Each case checks the kind (what the task does next) and that the description, which is
stored and shown, names objects but never row values or a DSN.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from kombu.exceptions import OperationalError as KombuOperationalError

from tests.fault_checks import ROW_VALUE, assert_safe, connection_fault, raised
from worker.database import create_engine
from worker.exceptions import (
    DatabaseUnavailable,
    EraserError,
    KeptRowsBlock,
    SubjectLocked,
    UnsatisfiablePlan,
)
from worker.faults import DatabaseFailure, FaultKind, classify, database_failures


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        # another erasure of the subject holds its lock: not counted as a failure
        (SubjectLocked(2.0), FaultKind.BUSY, "subject_locked"),
        # a plan that cannot run never will
        (
            UnsatisfiablePlan(["a", "b", "a"], "rows reference each other"),
            FaultKind.PERMANENT,
            "UnsatisfiablePlan",
        ),
        (KeptRowsBlock("audit_log", "fk_audit_customer", 3), FaultKind.PERMANENT, "KeptRowsBlock"),
        # an outage is worth waiting for, an unusable URL is not
        (DatabaseUnavailable("shop", "timeout"), FaultKind.TRANSIENT, "DatabaseUnavailable"),
        (
            DatabaseUnavailable("shop", "invalid URL", transient=False),
            FaultKind.PERMANENT,
            "DatabaseUnavailable",
        ),
        # the base class is permanent unless a subclass says otherwise
        (EraserError("something"), FaultKind.PERMANENT, "EraserError"),
        # network errors outside any driver
        (ConnectionResetError("peer reset"), FaultKind.TRANSIENT, "ConnectionResetError"),
        (TimeoutError(), FaultKind.TRANSIENT, "TimeoutError"),
        # the broker (kombu) is down
        (KombuOperationalError("broker down"), FaultKind.TRANSIENT, "OperationalError"),
    ],
)
def test_eraser_and_python_exceptions(exc: BaseException, kind: FaultKind, code: str) -> None:
    fault = classify(exc)
    assert (fault.kind, fault.code) == (kind, code)
    assert fault.retryable is (kind is not FaultKind.PERMANENT)
    if isinstance(exc, EraserError):
        assert fault.description == str(exc)


def test_an_unknown_exception_is_permanent_and_its_message_is_not_kept() -> None:
    fault = classify(ValueError(f"secret-value {ROW_VALUE}"))
    assert fault.kind is FaultKind.PERMANENT
    assert fault.code == "ValueError"
    assert fault.description == "internal error ValueError"
    assert_safe(fault, "secret-value")


def test_an_error_raised_while_handling_a_broker_error_is_transient() -> None:
    def send() -> None:
        try:
            raise KombuOperationalError("connection refused")
        except KombuOperationalError as exc:
            raise RuntimeError("could not publish") from exc

    assert classify(raised(send)).kind is FaultKind.TRANSIENT


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://x@127.0.0.1:1/db",  # nothing listens on port 1
        "mysql://x@127.0.0.1:1/db",
    ],
)
def test_a_refused_connection_is_transient(url: str) -> None:
    fault = connection_fault(url)
    assert fault.kind is FaultKind.TRANSIENT
    assert_safe(fault, "x@")


def test_an_unresolvable_host_is_permanent() -> None:
    fault = connection_fault("postgresql://x@no-such-host.invalid/db")
    assert fault.kind is FaultKind.PERMANENT
    assert fault.description == "cannot connect: unknown host name"


def test_sqlite_database_locked_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        holder.execute("BEGIN EXCLUSIVE")
        with waiter.connect() as conn:
            exc = raised(lambda: conn.exec_driver_sql("DELETE FROM t"))
        holder.execute("ROLLBACK")
    finally:
        waiter.dispose()
        holder.close()
    assert "database is locked" in str(exc)
    assert classify(exc).kind is FaultKind.TRANSIENT


@pytest.mark.parametrize(
    ("query", "readonly"),
    [
        pytest.param("DELETE FROM no_such_table", False, id="missing-table"),
        pytest.param("DELETE FROM t", True, id="read-only-file"),
    ],
)
def test_sqlite_permanent_errors_are_permanent(tmp_path: Path, query: str, readonly: bool) -> None:
    path = tmp_path / "target.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    setup.close()
    url = f"sqlite:///file:{path}?mode=ro&uri=true" if readonly else f"sqlite:///{path}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            exc = raised(lambda: conn.exec_driver_sql(query))
    finally:
        engine.dispose()
    assert isinstance(exc, sa.exc.OperationalError)
    assert classify(exc).kind is FaultKind.PERMANENT


def test_a_pool_timeout_is_transient(tmp_path: Path) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'pool.db'}", pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    try:
        with engine.connect():
            exc = raised(engine.connect)
    finally:
        engine.dispose()
    assert isinstance(exc, sa.exc.TimeoutError)
    assert classify(exc).kind is FaultKind.TRANSIENT


def test_a_value_the_driver_cannot_send_is_permanent_and_unquoted(tmp_path: Path) -> None:
    """A value refused before it reaches the database (a ``StatementError`` that is no
    ``DBAPIError``: a type's bind processor raised) comes out of the engine's entry
    points as a permanent ``DatabaseFailure`` that does not quote it."""
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")

    @database_failures
    def send() -> None:
        with engine.connect() as conn:
            conn.execute(sa.select(sa.bindparam("v", ROW_VALUE, type_=_Picky())))

    with pytest.raises(DatabaseFailure) as failed:
        send()
    engine.dispose()
    assert not isinstance(failed.value.driver_error, sa.exc.DBAPIError)
    assert ROW_VALUE in str(failed.value.driver_error)
    assert ROW_VALUE not in str(failed.value)
    assert failed.value.fault == classify(failed.value.driver_error)
    assert failed.value.fault.kind is FaultKind.PERMANENT
    assert str(failed.value) == "a statement's parameters were refused (ValueError)"
    assert failed.value.__cause__ is None
    assert failed.value.__context__ is None


class _Picky(sa.types.TypeDecorator[str]):
    """A type whose bind processor refuses every value, quoting it (as some do)."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> str | None:
        raise ValueError(f"cannot store {value!r}")
