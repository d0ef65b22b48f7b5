"""Recording a task's faults: a retry scheduled (the task waits, ``retrying``), or the
task failed for good with its dead letter written in the same transaction."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import orm

from models.store.dead_letters import DeadLetterReason, write_dead_letter
from models.store.tables import AuditEvent, Task, TaskStatus, utcnow

log = logging.getLogger("eraser.store")


def fail_task(
    session: orm.Session,
    task: Task,
    reason: DeadLetterReason,
    error: str,
    traceback: str | None,
) -> int:
    """Mark ``task`` failed for good and write its dead letter; returns the letter's id."""
    task.status = TaskStatus.FAILED
    task.error = error
    task.lease_id = None
    task.retry_at = None
    task.finished_at = task.heartbeat_at = utcnow()
    letter = write_dead_letter(session, task, reason, error, traceback)
    log.warning("task %s/%s dead-lettered (%s)", task.job_id, task.service, reason.value)
    return letter


def poison_error(crashes: int) -> str:
    """The error of a task dead-lettered because its worker kept dying."""
    return (
        f"the worker died {crashes} times while running this task; "
        "dead-lettered as a poison message"
    )


def postpone(task: Task, delay: float, error: str) -> None:
    """Release ``task`` to run again in ``delay`` seconds (``retrying``)."""
    now = utcnow()
    task.status = TaskStatus.RETRYING
    task.error = error
    task.lease_id = None
    task.retry_at = now + timedelta(seconds=delay)
    task.queued_at = now


def schedule_retry(session: orm.Session, task: Task, delay: float, error: str, code: str) -> None:
    """Count one more retry of ``task`` after a transient fault, audit it, and
    release the task to run again in ``delay`` seconds."""
    task.retries += 1
    session.add(
        AuditEvent(
            job_id=task.job_id,
            kind="task.retry",
            actor="worker",
            detail={
                "service": task.service,
                "retry": task.retries,
                "code": code,
                "in_seconds": round(delay, 2),
            },
        )
    )
    postpone(task, delay, error)
