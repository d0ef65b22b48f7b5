"""What the reaper asks of the job store: its lock, and the jobs and tasks the broker
may have lost (undispatched jobs, stale leases, overdue messages, lost chords,
passed deadlines), each found and marked in the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from models.erasure import TableAction
from models.store.database import JobStore
from models.store.dead_letters import DeadLetterReason
from models.store.faults import fail_task
from models.store.leases import lose_lease
from models.store.tables import AuditEvent, Job, JobStatus, Task, TaskStatus

#: Advisory-lock key of the reaper (``'eraser'`` as a number).
REAPER_LOCK_KEY = 0x657261736572

_OPEN_JOB = (JobStatus.PENDING, JobStatus.RUNNING)


@contextmanager
def reaper_lock(store: JobStore) -> Iterator[bool]:
    """Hold the reaper lock for one round (a PostgreSQL advisory lock); yields whether
    it was taken. SQLite has one process: always taken."""
    if store.engine.dialect.name != "postgresql":
        yield True
        return
    with store.engine.connect() as raw:
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(REAPER_LOCK_KEY))).scalar())
        try:
            yield got
        finally:
            if got:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(REAPER_LOCK_KEY)))


def expired_jobs(session: orm.Session, now: datetime) -> Sequence[Job]:
    """Open jobs past their deadline, locked (those another round holds are skipped)."""
    return session.scalars(
        sa.select(Job)
        .where(Job.status.in_(_OPEN_JOB), Job.deadline_at < now)
        .with_for_update(skip_locked=True)
    ).all()


def fail_unfinished(
    session: orm.Session, job: Job, now: datetime, removing: Collection[TableAction]
) -> list[tuple[Task, int]]:
    """Fail every unfinished task of a job past its deadline (a held lease is lost
    first); returns each failed task with its dead letter's id."""
    failed = []
    for task in job.tasks:
        if TaskStatus(task.status).terminal:
            continue
        if task.lease_id is not None:
            lose_lease(session, task, now, "the job's deadline passed", removing)
        error = "the job's deadline passed before this task finished"
        failed.append((task, fail_task(session, task, DeadLetterReason.DEADLINE, error, None)))
    return failed


def undispatched_jobs(session: orm.Session, created_before: datetime) -> Sequence[str]:
    """Jobs committed before ``created_before`` and never dispatched (the outbox)."""
    return session.scalars(
        sa.select(Job.id).where(
            Job.status == JobStatus.PENDING,
            Job.dispatched_at.is_(None),
            Job.created_at < created_before,
        )
    ).all()


def stale_leases(session: orm.Session, heartbeat_before: datetime) -> Sequence[Task]:
    """Held tasks whose last heartbeat is older than ``heartbeat_before``, locked."""
    return session.scalars(
        sa.select(Task)
        .where(
            Task.lease_id.is_not(None),
            Task.heartbeat_at < heartbeat_before,
            Task.status.in_((TaskStatus.RUNNING, TaskStatus.RETRYING)),
        )
        .with_for_update(skip_locked=True)
    ).all()


def overdue_tasks(session: orm.Session, before: datetime) -> Sequence[tuple[str, str]]:
    """(job, service) of the dispatched tasks whose message seems lost: nothing has
    happened to them since ``before`` (a pending task queued earlier, a retry due
    earlier, a task between two slices whose continuation never started)."""
    overdue = sa.or_(
        sa.and_(Task.status == TaskStatus.PENDING, Task.queued_at < before),
        sa.and_(Task.status == TaskStatus.RETRYING, Task.retry_at < before),
        sa.and_(Task.status == TaskStatus.RUNNING, Task.queued_at < before),
    )
    rows = session.execute(
        sa.select(Task.job_id, Task.service)
        .join(Job, Job.id == Task.job_id)
        .where(
            Job.status.in_(_OPEN_JOB),
            Job.dispatched_at.is_not(None),
            Task.lease_id.is_(None),
            overdue,
        )
    ).all()
    return [(job_id, service) for job_id, service in rows]


def idle_task(session: orm.Session, job_id: str, service: str) -> Task | None:
    """The task, locked, when no execution holds it and it is still open."""
    task = session.scalar(
        sa.select(Task)
        .where(Task.job_id == job_id, Task.service == service, Task.lease_id.is_(None))
        .with_for_update(skip_locked=True)
    )
    if task is None or TaskStatus(task.status).terminal:
        return None
    return task


def requeue(session: orm.Session, task: Task, now: datetime, why: str) -> None:
    """Stamp ``task`` queued again (its message is about to be sent) and audit why. A
    retry's due time moves to now: overdue again only after another grace period."""
    task.queued_at = now
    if task.retry_at is not None:
        task.retry_at = now
    session.add(
        AuditEvent(
            job_id=task.job_id,
            kind="task.requeued",
            actor="reaper",
            detail={"service": task.service, "why": why},
        )
    )


def jobs_to_finalize(session: orm.Session) -> Sequence[str]:
    """Open, dispatched jobs whose tasks have all ended (their chord was lost)."""
    return session.scalars(
        sa.select(Job.id).where(
            Job.status.in_(_OPEN_JOB),
            Job.dispatched_at.is_not(None),
            ~sa.exists().where(
                Task.job_id == Job.id,
                Task.status.not_in([s.value for s in TaskStatus if s.terminal]),
            ),
        )
    ).all()
