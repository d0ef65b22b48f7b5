"""A walk that fails after some of its batches committed says so.

Every batch commits on its own, so a failure midway (a database error, a refusal only
the rows could reveal, a bug) leaves what was committed before it: foreign-key
consistent, but the subject partially erased. The failure raised in its place keeps
its kind (a transient one is still retried, and a re-run continues from what is
left) and adds what was written, in its message and in ``written``, for the job
record and the user.
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa

from models.erasure import TableOutcome
from worker.exceptions import EraserError
from worker.faults import DatabaseFailure, classify

#: Tables named in the message; the rest are counted.
_NAMED = 5
#: The attribute a failure carries what was written in (see ``written_before``).
_WRITTEN = "written"


class PartiallyErased(EraserError):
    """An unexpected failure (not the database's, not a refusal) after some batches
    committed. Its cause is chained; its message names only the cause's type."""

    def __init__(self, cause: BaseException, written: list[TableOutcome]) -> None:
        super().__init__(f"internal error {type(cause).__name__}; {summary(written)}")
        self.written = written


def summary(written: list[TableOutcome]) -> str:
    """One line: the subject is partially erased, and what was written."""
    total = sum(o.rows for o in written)
    named = ", ".join(f"{o.table} {o.action} {o.rows}" for o in written[:_NAMED])
    more = f" and {len(written) - _NAMED} more tables" if len(written) > _NAMED else ""
    return (
        f"the subject is partially erased: {total} rows written before the failure"
        f" ({named}{more}); the rest is still there, and running the erasure again once"
        " the cause is dealt with continues from it"
    )


def partially_erased(exc: Exception, tables: list[TableOutcome]) -> Exception:
    """``exc``, a walk's failure, as it should be raised once ``tables`` (the committed
    counts so far) were written: unchanged when nothing was; else saying so and
    carrying ``written``. Exceptions of other layers (a lost lease, the end of a time
    slice) pass unchanged: they are not failures of the walk."""
    written = [o for o in tables if o.rows]
    if not written:
        return exc
    if isinstance(exc, sa.exc.StatementError):
        exc = DatabaseFailure(classify(exc), exc)
    if isinstance(exc, DatabaseFailure):
        fault = replace(exc.fault, description=f"{exc.fault.description}; {summary(written)}")
        failure = DatabaseFailure(fault, exc.driver_error)
        setattr(failure, _WRITTEN, written)
        return failure
    if isinstance(exc, EraserError):
        exc.args = (f"{exc}; {summary(written)}",)
        setattr(exc, _WRITTEN, written)
        return exc
    if type(exc).__module__ == "builtins":
        return PartiallyErased(exc, written)
    return exc


def written_before(exc: BaseException) -> list[TableOutcome]:
    """What an erasure committed before it failed with ``exc`` (empty: nothing, or not
    a failure of the walk)."""
    found = getattr(exc, _WRITTEN, None)
    return list(found) if isinstance(found, list) else []
