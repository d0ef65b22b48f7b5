"""Engines for target databases, created the same way everywhere (CLI, tasks, tests)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from worker.dialects import known_dialect
from worker.exceptions import DatabaseUnavailable

#: Drivers named in ARCHITECTURE.md: psycopg2, PyMySQL, the standard library's sqlite3.
_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2"}
_DRIVERS |= {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and pick Eraser's driver when the URL names none."""
    try:
        parsed = sa.make_url(url)
    except Exception:
        raise DatabaseUnavailable(
            "the given database URL", "it is not a valid URL", transient=False
        ) from None
    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=drivername)


#: Query parameters of a database URL that hold a secret (libpq takes ``?password=``).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact(url: str | URL) -> str:
    """The URL with its password hidden, for messages: the one after the user name and
    any given as a query parameter."""
    try:
        parsed = normalize_url(url)
    except DatabaseUnavailable:
        return "the given database URL"
    hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_PARAMETERS}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")


def _secrets(url: URL) -> list[str]:
    """The URL's password and secret query parameters' values."""
    found = [str(url.password)] if url.password else []
    for key, value in url.query.items():
        if key.lower() in _SECRET_PARAMETERS:
            found += [value] if isinstance(value, str) else list(value)
    return [s for s in found if s]


def create_engine(url: str | URL, *, existing: bool = False, **kwargs: Any) -> Engine:
    """An engine for a target database (or the job store).

    SQLite connections enforce foreign keys and use explicit ``BEGIN`` so that
    transactions (and ``PRAGMA defer_foreign_keys``) behave as on the other databases.
    With ``existing`` (a database to erase from), a SQLite file that is not there is
    refused instead of created empty. Statement parameters are never put in
    SQLAlchemy's messages or logs (``hide_parameters``): they carry subject values.
    """
    parsed = normalize_url(url)
    dialect = known_dialect(parsed.get_backend_name())
    if existing and dialect is not None:
        missing = dialect.check_exists(parsed)
        if missing is not None:
            raise DatabaseUnavailable(redact(parsed), missing, transient=False)
    options: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if dialect is not None:
        options["connect_args"] = dialect.connect_args()
    options.update(kwargs)
    try:
        engine = sa.create_engine(parsed, **options)
    except Exception as exc:
        raise DatabaseUnavailable(redact(parsed), type(exc).__name__, transient=False) from None
    if dialect is not None:
        dialect.configure(engine)
    return engine


def check_connection(engine: Engine) -> None:
    """Connect once, turning driver errors into ``DatabaseUnavailable`` without the DSN."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise DatabaseUnavailable(redact(engine.url), _scrub(reason, engine.url)) from None


def _scrub(message: str, url: URL) -> str:
    for secret in _secrets(url):
        message = message.replace(secret, "***")
    return message


def describe_database_error(exc: sa.exc.DBAPIError) -> str:
    """Name a driver error without its detail text: drivers quote key values (subject
    data) there, and sometimes the DSN."""
    orig = exc.orig
    code = getattr(orig, "pgcode", None)
    if code is None and orig is not None and getattr(orig, "args", None):
        first = orig.args[0]
        code = str(first) if isinstance(first, int) else None
    kind = type(orig).__name__ if orig is not None else type(exc).__name__
    return f"database error {kind}" + (f" (code {code})" if code else "")


def driver_error(
    conn: sa.Connection, exc: Exception, cursor: Any, statement: str
) -> sa.exc.StatementError:
    """A driver error raised on ``conn``'s raw connection, as SQLAlchemy's own (which
    ``worker.faults`` classifies), naming ``statement``; a lost connection is
    invalidated."""
    gone = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)  # type: ignore[arg-type]
    if gone:
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(
        statement,
        None,
        exc,
        conn.dialect.loaded_dbapi.Error,
        connection_invalidated=gone,
        dialect=conn.dialect,
    )
