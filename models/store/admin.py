"""Named writes of the operators' actions on the job store: retry a job's failed
tasks, cancel its waiting ones, find the task a dead letter replays.

Each takes the caller's open session and explicit arguments, locks what it changes,
writes the audit event, and leaves sending anything to the broker to the caller,
after the commit (a worker quicker than the commit would find the task unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import orm

from models.jobstore import AuditEvent, DeadLetter, Job, JobStatus, Task, TaskStatus, utcnow


class Refused(Exception):
    """The action does not apply: no such job or dead letter, nothing to retry or cancel,
    or a dead letter already replayed. The message says which."""


@dataclass
class Requeued:
    """What ``requeue_failed`` put back in the queue."""

    job: Job
    tasks: list[Task]
    #: Dead letters of those tasks, now marked replayed.
    replayed_letters: set[int] = field(default_factory=set)

    @property
    def services(self) -> list[str]:
        return [t.service for t in self.tasks]


def _locked_job(session: orm.Session, job_id: str) -> Job:
    job = session.scalar(sa.select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        raise Refused(f"no job {job_id}")
    return job


def _failed_tasks(job: Job, services: Sequence[str]) -> list[Task]:
    failed = [t for t in job.tasks if t.status == TaskStatus.FAILED]
    if services:
        unknown = sorted(set(services) - {t.service for t in failed})
        if unknown:
            raise Refused(f"job {job.id} has no failed task for service {unknown[0]!r}")
        failed = [t for t in failed if t.service in services]
    if not failed:
        raise Refused(f"job {job.id} has no failed task to retry (status {job.status})")
    return failed


def _reset(task: Task) -> None:
    task.status = TaskStatus.PENDING
    task.retries = 0
    task.crashes = 0
    task.lease_id = None
    task.retry_at = None
    task.finished_at = None
    task.error = None


def requeue_failed(
    session: orm.Session,
    job_id: str,
    *,
    actor: str,
    timeout_seconds: float,
    services: Sequence[str] = (),
    dead_letter_ids: Sequence[int] = (),
    now: datetime | None = None,
) -> Requeued:
    """Make the job's failed tasks (or the named ones) pending again, each keeping its
    history and the rows it already removed; mark their open dead letters replayed;
    run the job again with a deadline at least ``timeout_seconds`` away."""
    now = now or utcnow()
    job = _locked_job(session, job_id)
    failed = _failed_tasks(job, services)
    letters = session.scalars(
        sa.select(DeadLetter).where(
            DeadLetter.job_id == job_id,
            DeadLetter.service.in_([t.service for t in failed]),
            DeadLetter.replayed_at.is_(None),
        )
    ).all()
    for letter in letters:
        letter.replayed_at = now
        letter.replayed_by = actor
    for task in failed:
        _reset(task)
    job.status = JobStatus.RUNNING
    job.finished_at = None
    job.deadline_at = max(job.deadline_at or now, now + timedelta(seconds=timeout_seconds))
    replayed = {d.id for d in letters}
    session.add(
        AuditEvent(
            job_id=job_id,
            kind="job.retried",
            actor=actor,
            detail={
                "services": [t.service for t in failed],
                "dead_letters": sorted({*dead_letter_ids, *replayed}),
            },
        )
    )
    return Requeued(job, failed, replayed)


def cancel_waiting(session: orm.Session, job_id: str, *, actor: str) -> list[str]:
    """Cancel the job's tasks no worker has started; returns their services.

    The task rows are locked and read again: a worker claiming one between a plain
    read and this write would have its task marked cancelled after it ran. Locked, a
    claim waits for the commit and then finds the task cancelled."""
    job = _locked_job(session, job_id)
    waiting = session.scalars(
        sa.select(Task)
        .where(Task.job_id == job_id, Task.status == TaskStatus.PENDING, Task.attempts == 0)
        .order_by(Task.service)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    if not waiting:
        raise Refused(f"job {job_id} has no task left to cancel (status {job.status})")
    now = utcnow()
    for task in waiting:
        task.status = TaskStatus.CANCELLED
        task.finished_at = now
    names = [t.service for t in waiting]
    session.add(
        AuditEvent(job_id=job_id, kind="job.cancelled", actor=actor, detail={"services": names})
    )
    return names


def replay_target(session: orm.Session, letter_id: int) -> tuple[str, str]:
    """The (job, service) a dead letter replays; refused when it was replayed already."""
    letter = session.get(DeadLetter, letter_id)
    if letter is None:
        raise Refused(f"no dead letter {letter_id}")
    if letter.replayed_at is not None:
        raise Refused(
            f"dead letter {letter_id} was replayed at "
            f"{letter.replayed_at.isoformat(timespec='seconds')} by {letter.replayed_by}"
        )
    return letter.job_id, letter.service
