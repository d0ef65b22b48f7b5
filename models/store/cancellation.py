"""Cancelling a job: its tasks that no execution has started end ``cancelled``; the
ones running finish (an erasure is not cut off mid-way)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm

from models.store.exceptions import RetryRefused
from models.store.tables import AuditEvent, Job, Task, TaskStatus, utcnow


def cancel_waiting_tasks(session: orm.Session, job_id: str, actor: str) -> list[str]:
    """Cancel the job's tasks that have not started; returns their services. Raises
    ``RetryRefused`` when the job does not exist or has no such task."""
    job = session.scalar(sa.select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        raise RetryRefused(f"no job {job_id}")
    # The task rows are locked and read again: a worker claiming one (or recording
    # its success) between a plain read and the write below would have its task
    # marked cancelled after it ran. Locked, a claim waits for this commit and then
    # finds the task cancelled; one already claimed is no longer pending here.
    waiting = session.scalars(
        sa.select(Task)
        .where(
            Task.job_id == job_id,
            Task.status == TaskStatus.PENDING,
            Task.attempts == 0,
        )
        .order_by(Task.service)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    if not waiting:
        raise RetryRefused(f"job {job_id} has no task left to cancel (status {job.status})")
    now = utcnow()
    for t in waiting:
        t.status = TaskStatus.CANCELLED
        t.finished_at = now
    names = [t.service for t in waiting]
    session.add(
        AuditEvent(job_id=job_id, kind="job.cancelled", actor=actor, detail={"services": names})
    )
    return names
