"""The outbox stamps: a job is dispatched once. The stamp (``dispatched_at``, each
task's ``queued_at``) commits before the chord is sent, and is taken back when the
broker refuses the chord, so the reaper dispatches the job later."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from models.store.tables import Job, JobStatus, Task, TaskStatus, utcnow


def stamp_dispatch(session: orm.Session, job_id: str) -> list[str] | None:
    """Lock the job and stamp it and its pending tasks as dispatched; returns those
    tasks' services (None when the job is missing or was dispatched already)."""
    job = session.scalar(sa.select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.dispatched_at is not None:
        return None
    pending = [t for t in job.tasks if t.status == TaskStatus.PENDING]
    stamp_queued(job, pending)
    if pending:
        job.status = JobStatus.RUNNING
    return [t.service for t in pending]


def take_back_dispatch(session: orm.Session, job_id: str) -> None:
    """Undo a dispatch stamp whose chord the broker did not take."""
    session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(dispatched_at=None, status=JobStatus.PENDING)
    )


def stamp_queued(job: Job, tasks: Sequence[Task]) -> None:
    """Stamp ``job`` dispatched and ``tasks`` queued now."""
    now = utcnow()
    job.dispatched_at = now
    session = orm.object_session(job)
    if session is None or not tasks:
        for t in tasks:
            t.queued_at = now
        return
    # One UPDATE for all the tasks, not one per task row.
    session.execute(sa.update(Task).where(Task.id.in_([t.id for t in tasks])).values(queued_at=now))
