"""Operators' second chances: re-running a job's failed tasks, or one dead letter's.
Each task is reset to pending (keeping its history and the rows it removed) and its
unreplayed dead letters are marked replayed, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from models.store.dispatch import stamp_queued
from models.store.exceptions import RetryRefused, SubjectPurged
from models.store.tables import AuditEvent, DeadLetter, Job, JobStatus, Task, TaskStatus, utcnow


@dataclass(frozen=True)
class Requeued:
    """What a retry reset: the services to send again, the dead letters replayed."""

    services: list[str]
    replayed: set[int]


def requeue_failed_tasks(
    session: orm.Session,
    job_id: str,
    *,
    services: Sequence[str],
    dead_letter_ids: Sequence[int],
    actor: str,
    deadline_at: datetime,
) -> Requeued:
    """Reset the job's failed tasks (only those of ``services`` when given) to pending,
    stamped queued, and reopen the job until at least ``deadline_at``. Raises
    ``RetryRefused`` when there is no such job or nothing failed to retry,
    ``SubjectPurged`` when the subject's value is gone (nothing could erase it)."""
    job = session.scalar(sa.select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        raise RetryRefused(f"no job {job_id}")
    failed = _failed_tasks(job, services)
    if job.subject_value is None:
        raise SubjectPurged(job_id)
    names = [t.service for t in failed]
    letters = session.scalars(
        sa.select(DeadLetter).where(
            DeadLetter.job_id == job_id,
            DeadLetter.service.in_(names),
            DeadLetter.replayed_at.is_(None),
        )
    ).all()
    now = utcnow()
    for letter in letters:
        letter.replayed_at = now
        letter.replayed_by = actor
    for t in failed:
        _reset(t)
    job.status = JobStatus.RUNNING
    job.finished_at = None
    job.deadline_at = max(job.deadline_at or now, deadline_at)
    replayed = {d.id for d in letters}
    session.add(
        AuditEvent(
            job_id=job_id,
            kind="job.retried",
            actor=actor,
            detail={"services": names, "dead_letters": sorted({*dead_letter_ids, *replayed})},
        )
    )
    stamp_queued(job, failed)
    return Requeued(names, replayed)


def _failed_tasks(job: Job, services: Sequence[str]) -> list[Task]:
    failed = [t for t in job.tasks if t.status == TaskStatus.FAILED]
    if services:
        unknown = sorted(set(services) - {t.service for t in failed})
        if unknown:
            raise RetryRefused(f"job {job.id} has no failed task for service {unknown[0]!r}")
        failed = [t for t in failed if t.service in services]
    if not failed:
        raise RetryRefused(f"job {job.id} has no failed task to retry (status {job.status})")
    return failed


def _reset(task: Task) -> None:
    task.status = TaskStatus.PENDING
    task.retries = 0
    task.crashes = 0
    task.lease_id = None
    task.retry_at = None
    task.finished_at = None
    task.error = None


def replayable_letter(session: orm.Session, dead_letter_id: int) -> tuple[str, str]:
    """The (job, service) of a dead letter not replayed yet; ``RetryRefused`` when it
    does not exist or was replayed."""
    letter = session.get(DeadLetter, dead_letter_id)
    if letter is None:
        raise RetryRefused(f"no dead letter {dead_letter_id}")
    if letter.replayed_at is not None:
        raise RetryRefused(
            f"dead letter {dead_letter_id} was replayed at "
            f"{letter.replayed_at.isoformat(timespec='seconds')} by {letter.replayed_by}"
        )
    return letter.job_id, letter.service
