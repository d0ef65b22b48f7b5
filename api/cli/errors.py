"""How a failure becomes one line on stderr and an exit status.

A failure a user can meet (bad input, an unreachable database, a plan that cannot run,
a refusal) prints ``eraser: error: <one line>`` and exits 2: no traceback, no DSN
password, no subject value. Anything else is a bug and keeps its traceback.

The exception classes are looked up in the modules already imported: an exception can
only come from a module that ran, and importing them all here would cost every command
the start-up time of the engine, the job store and the HTTP API.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
#: The erasure ran but a final count still found rows of the subject (one-database
#: mode), or a job ended but not ``succeeded`` (job commands).
EXIT_UNVERIFIED = 1
#: Bad input, an unreachable database, a plan that cannot run, an unconfirmed erasure.
EXIT_ERROR = 2
#: ``--wait`` gave up before the job ended.
EXIT_TIMEOUT = 3
#: ``eraser erase``: the subject has no row in this database; nothing was changed.
EXIT_NOTHING_MATCHED = 4
#: Interrupted (Ctrl-C): committed batches stay done.
EXIT_INTERRUPTED = 130

#: (module, class) of every failure a user can meet.
_USER_ERRORS = (
    ("worker.exceptions", "EraserError"),
    ("models.registry", "RegistryError"),
    ("models.settings", "MissingDatabaseUrl"),
    ("models.certificate", "CertificateError"),
    ("tasks.submit", "SubmitError"),
    ("api.jobs", "JobNotFound"),
    ("api.jobs", "EmbeddedOnly"),
    ("api.ops", "LetterNotFound"),
    ("api.certificates", "CertificateRefused"),
    ("api.certificates", "JwksUnavailable"),
    ("models.keyring", "MissingSecrets"),
    ("api.demo", "DemoRefused"),
    ("api.cli.errors", "Refused"),
    ("api.keys", "KeysUnavailable"),
)


class Refused(Exception):
    """The command line refuses to go on (an unconfirmed erasure, say)."""


def _loaded(module: str, name: str) -> type[BaseException] | None:
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def describe(exc: BaseException) -> str | None:
    """The one line that tells a user what failed, or None when ``exc`` is a bug."""
    for module, name in _USER_ERRORS:
        cls = _loaded(module, name)
        if cls is not None and isinstance(exc, cls):
            return str(exc)
    invalid = _loaded("pydantic_core", "ValidationError")
    if invalid is not None and isinstance(exc, invalid):
        first = exc.errors()[0]  # type: ignore[attr-defined]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    dbapi = _loaded("sqlalchemy.exc", "DBAPIError")
    if dbapi is not None and isinstance(exc, dbapi):
        from worker.database import describe_database_error  # noqa: PLC0415

        return describe_database_error(exc)  # type: ignore[arg-type]
    statement = _loaded("sqlalchemy.exc", "StatementError")
    if statement is not None and isinstance(exc, statement):
        # Raised before the statement reached the database (a value its driver cannot
        # send); the original message may quote the value, so only its class is shown.
        return f"a statement's parameters were refused ({type(exc.orig).__name__})"  # type: ignore[attr-defined]
    return None


def fail(message: str) -> None:
    """Print one error line (a message never holds a newline)."""
    line = " ".join(message.split("\n"))
    sys.stderr.write(f"eraser: error: {line}\n")
    sys.stderr.flush()
