"""Which failures are worth retrying; each dialect reads its own SQLSTATEs and driver codes.

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

from worker.dialects import DIALECTS
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


#: Connection-time failures that a retry cannot fix (psycopg2 gives them no SQLSTATE).
_CONNECT_PERMANENT = (
    ("password authentication failed", "password authentication failed"),
    ("no pg_hba.conf entry", "the server's pg_hba.conf rejects this client"),
    ("does not exist", "the database or role does not exist"),
    ("invalid dsn", "invalid connection string"),
    ("could not translate host name", "unknown host name"),
)


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
    for dialect in DIALECTS:  # each database reads its own codes (SQLSTATE, errno)
        found = dialect.classify_error(orig)
        if found is not None:
            kind = FaultKind.TRANSIENT if found.transient else FaultKind.PERMANENT
            return Fault(kind, found.code, found.description)
    name = type(orig).__name__ if orig is not None else type(exc).__name__
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


def connection_lost(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the database connection going away: a
    fault of the execution, not of its worker."""
    if exc is None:
        return False
    for cause in [exc, *_causes(exc)]:
        found = cause.driver_error if isinstance(cause, DatabaseFailure) else cause
        if isinstance(found, sa.exc.DBAPIError) and found.connection_invalidated:
            return True
    return False


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
