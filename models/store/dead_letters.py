"""Writing dead letters: a task that failed for good keeps a row with what went wrong
(error, frames-only traceback, attempts), written in the transaction that fails it."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import orm

from models.store.tables import AuditEvent, DeadLetter, Task


class DeadLetterReason(StrEnum):
    #: Retrying cannot help (permission denied, missing table, unsatisfiable plan).
    PERMANENT = "permanent"
    #: A transient fault outlasted every retry.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: The task's worker died every time it ran it.
    POISON = "poison"
    #: The job passed its deadline before the task finished.
    DEADLINE = "deadline"


def write_dead_letter(
    session: orm.Session,
    task: Task,
    reason: DeadLetterReason,
    error: str,
    traceback: str | None,
) -> int:
    """Add the dead-letter row and its audit event; returns the letter's id."""
    letter = DeadLetter(
        job_id=task.job_id,
        service=task.service,
        reason=reason,
        error=error,
        traceback=traceback,
        attempts=task.attempts,
        celery_id=task.celery_id,
    )
    session.add(letter)
    session.flush()
    session.add(
        AuditEvent(
            job_id=task.job_id,
            kind="task.dead_lettered",
            actor="worker",
            detail={"service": task.service, "dead_letter": letter.id, "reason": reason.value},
        )
    )
    return letter.id
