"""Which failures are worth retrying: the one place that reads SQLSTATEs and driver codes.

``classify(exc)`` sorts an exception into

- ``TRANSIENT``: the same work may succeed later (deadlock, lock timeout, serialization
  failure, a connection lost or refused, a broker hiccup). Retried with backoff, up to
  a limit, then dead-lettered.
- ``BUSY``: another erasure of the same subject holds the work right now. Retried
  without counting against the limit (the job's deadline bounds it).
- ``PERMANENT``: retrying cannot help (permission denied, a missing table, a plan that
  cannot run, bad credentials). Dead-lettered at once.

Every fault carries a one-line description that is safe to store and show: a driver's
message text is used only for codes whose text names objects, never row values
(a foreign-key violation's detail quotes key values, which can be subject data).
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from worker.exceptions import EraserError, SubjectLocked


class FaultKind(StrEnum):
    TRANSIENT = "transient"
    BUSY = "busy"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    #: SQLSTATE, MySQL error number, or an exception class name.
    code: str
    #: One line, no subject data, no DSN.
    description: str

    @property
    def retryable(self) -> bool:
        return self.kind is not FaultKind.PERMANENT


#: PostgreSQL SQLSTATEs (and classes, by their first two characters) worth retrying.
_PG_TRANSIENT = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available (lock timeout)",
    "57014": "statement cancelled (statement timeout)",
    "57P01": "connection terminated by an administrator",
    "57P02": "server crash shutdown",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
    "53400": "configuration limit exceeded",
    "58000": "system error",
    "58030": "I/O error",
}
_PG_TRANSIENT_CLASSES = {"08": "connection failure"}
_PG_PERMANENT = {
    "42501": "permission denied",
    "42P01": "table does not exist",
    "42703": "column does not exist",
    "3D000": "database does not exist",
    "3F000": "schema does not exist",
    "28P01": "password authentication failed",
    "28000": "authorization rejected",
    "23503": "foreign-key violation",
    "25006": "read-only transaction",
}
#: Codes whose primary message names objects (tables, roles), never row values.
#: Connection-time failures that a retry cannot fix (psycopg2 gives them no SQLSTATE).
_CONNECT_PERMANENT = (
    ("password authentication failed", "password authentication failed"),
    ("no pg_hba.conf entry", "the server's pg_hba.conf rejects this client"),
    ("does not exist", "the database or role does not exist"),
    ("invalid dsn", "invalid connection string"),
    ("could not translate host name", "unknown host name"),
)
_PG_MESSAGE_SAFE = {"42501", "42P01", "42703", "3F000", "55P03", "57P01", "40P01", "57014"}

#: MySQL/MariaDB error numbers (PyMySQL puts them in ``args[0]``).
_MYSQL_TRANSIENT = {
    1205: "lock wait timeout exceeded",
    1213: "deadlock found",
    1040: "too many connections",
    1053: "server shutdown in progress",
    1927: "connection killed",
    2002: "cannot connect (socket)",
    2003: "cannot connect to the server",
    2006: "server has gone away",
    2013: "lost connection during query",
    2014: "commands out of sync after a lost connection",
    3024: "query execution interrupted (timeout)",
    4031: "disconnected by the server (idle timeout)",
}
_MYSQL_PERMANENT = {
    1142: "command denied (permission)",
    1143: "column command denied (permission)",
    1044: "access denied to database",
    1045: "access denied (credentials)",
    1049: "unknown database",
    1146: "table does not exist",
    1054: "unknown column",
    1451: "foreign-key violation",
}
_MYSQL_MESSAGE_SAFE = {1142, 1143, 1146, 1049}


class DatabaseFailure(EraserError):
    """The database refused a statement of the erasure, or the connection was lost.

    Raised by the engine's entry points (``erase``, ``dry_run``, ``nothing_to_erase``)
    in place of SQLAlchemy's error. Its message is the fault's one-line description,
    never the driver's text: drivers quote key values (subject data) in a foreign-key
    violation's detail, and SQLAlchemy quotes the statement and its parameters. The
    driver's error is kept in ``driver_error`` for a debugger; it is not chained, so a
    logged traceback does not print it."""

    def __init__(self, fault: Fault, driver_error: BaseException) -> None:
        super().__init__(fault.description)
        self.fault = fault
        self.code = fault.code
        self.transient = fault.retryable
        self.driver_error = driver_error


_P = ParamSpec("_P")
_R = TypeVar("_R")


def database_failures(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let ``function`` raise ``DatabaseFailure`` where SQLAlchemy raised an error that
    may quote subject data."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except sa.exc.StatementError as exc:
            failure = DatabaseFailure(classify(exc), exc)
        raise failure

    return wrapper


def classify(exc: BaseException) -> Fault:
    """Sort a failure into transient, busy or permanent, with a safe description."""
    if isinstance(exc, DatabaseFailure):
        return exc.fault
    if isinstance(exc, SubjectLocked):
        return Fault(FaultKind.BUSY, "subject_locked", str(exc))
    if isinstance(exc, EraserError):
        kind = FaultKind.TRANSIENT if exc.transient else FaultKind.PERMANENT
        return Fault(kind, type(exc).__name__, str(exc))
    if isinstance(exc, sa.exc.DBAPIError):
        return _classify_dbapi(exc)
    if isinstance(exc, sa.exc.StatementError):
        # Raised before the statement reached the database: a value its driver cannot
        # send. The message may quote the value, so only the class is named.
        name = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
        return Fault(FaultKind.PERMANENT, name, f"a statement's parameters were refused ({name})")
    if isinstance(exc, sa.exc.TimeoutError):  # no free connection in the pool, for now
        return Fault(FaultKind.TRANSIENT, "pool_timeout", "no database connection free in time")
    if _is_broker_error(exc):
        return Fault(FaultKind.TRANSIENT, type(exc).__name__, f"broker error {type(exc).__name__}")
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout):
        return Fault(FaultKind.TRANSIENT, type(exc).__name__, f"network error {type(exc).__name__}")
    # Unknown failures are not retried: a bug retried five times is five bugs. The
    # message of an arbitrary exception may quote row data, so only its type is named.
    return Fault(FaultKind.PERMANENT, type(exc).__name__, f"internal error {type(exc).__name__}")


def _classify_dbapi(exc: sa.exc.DBAPIError) -> Fault:
    orig = exc.orig
    pgcode = getattr(orig, "pgcode", None)
    if isinstance(pgcode, str) and pgcode:
        return _classify_pg(exc, pgcode)
    number = _mysql_number(orig)
    if number is not None:
        return _classify_mysql(orig, number)
    name = type(orig).__name__ if orig is not None else type(exc).__name__
    if type(orig).__module__ == "sqlite3":
        return _classify_sqlite(orig, name)
    if exc.connection_invalidated or isinstance(
        exc, sa.exc.OperationalError | sa.exc.InterfaceError
    ):
        # psycopg2 reports connection-time failures and a dropped socket ("server
        # closed the connection unexpectedly") without a SQLSTATE. The text is read
        # to tell a wrong DSN from an outage, and is never shown.
        text = str(orig).lower()
        for marker, label in _CONNECT_PERMANENT:
            if marker in text:
                return Fault(FaultKind.PERMANENT, name, f"cannot connect: {label}")
        return Fault(FaultKind.TRANSIENT, name, f"lost or refused database connection ({name})")
    return Fault(FaultKind.PERMANENT, name, f"database error {name}")


def _classify_pg(exc: sa.exc.DBAPIError, code: str) -> Fault:
    label = _PG_TRANSIENT.get(code) or _PG_TRANSIENT_CLASSES.get(code[:2])
    kind = FaultKind.TRANSIENT
    if label is None:
        kind = FaultKind.PERMANENT
        label = _PG_PERMANENT.get(code, f"database error {type(exc.orig).__name__}")
    text = f"{label} (SQLSTATE {code})"
    if code in _PG_MESSAGE_SAFE:
        primary = getattr(getattr(exc.orig, "diag", None), "message_primary", None)
        if primary:
            text = f"{text}: {primary.strip().splitlines()[0]}"
    return Fault(kind, code, text)


def _classify_sqlite(orig: object, name: str) -> Fault:
    """SQLite: a busy or locked database clears up; anything else (no such table, a
    read-only file, a malformed database) does not."""
    text = str(orig).lower()
    if "locked" in text or "busy" in text:
        return Fault(FaultKind.TRANSIENT, name, "database is locked (SQLite)")
    if "no such table" in text:
        return Fault(FaultKind.PERMANENT, name, "table does not exist (SQLite)")
    if "readonly" in text or "read-only" in text:
        return Fault(FaultKind.PERMANENT, name, "the database file is read-only (SQLite)")
    return Fault(FaultKind.PERMANENT, name, f"database error {name} (SQLite)")


def _mysql_number(orig: object) -> int | None:
    args = getattr(orig, "args", None)
    if type(orig).__module__.startswith("pymysql") and args and isinstance(args[0], int):
        return args[0]
    return None


def _classify_mysql(orig: object, number: int) -> Fault:
    label = _MYSQL_TRANSIENT.get(number)
    kind = FaultKind.TRANSIENT
    if label is None:
        kind = FaultKind.PERMANENT
        label = _MYSQL_PERMANENT.get(number, f"database error {type(orig).__name__}")
    text = f"{label} (MySQL error {number})"
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    if number in _MYSQL_MESSAGE_SAFE and len(args) > 1 and isinstance(args[1], str):
        text = f"{text}: {str(args[1]).strip().splitlines()[0]}"
    return Fault(kind, str(number), text)


def _is_broker_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    if module.startswith(("kombu.", "redis.", "amqp.")):
        return True
    return any(type(c).__module__.startswith(("kombu.", "redis.")) for c in _causes(exc))


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current = exc.__cause__ or exc.__context__
    while current is not None and len(seen) < 5:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
