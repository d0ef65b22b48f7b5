"""``eraser.finalize_job``: the chord body. Recomputes the job from its task rows
(a chord's result list can hold duplicates or miss parts), sets totals and status,
writes the audit event. Running it twice changes nothing the second time."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from models.jobstore import AuditEvent, Job, JobStatus, JobStore, Task, TaskStatus, utcnow
from models.settings import get_settings
from tasks.resources import resources
from worker.app import app

log = logging.getLogger("eraser.finalize")


@app.task(name="eraser.finalize_job")
def finalize_job(_results: list[Any], job_id: str) -> dict[str, Any]:
    status = finalize(resources().store, job_id, in_worker=True)
    return {"job_id": job_id, "status": status}


def job_status(task_statuses: list[TaskStatus]) -> JobStatus:
    """A job's status from its tasks' statuses."""
    if not task_statuses or all(s is TaskStatus.CANCELLED for s in task_statuses):
        return JobStatus.CANCELLED
    if any(not s.terminal for s in task_statuses):
        started = any(s is not TaskStatus.PENDING for s in task_statuses)
        return JobStatus.RUNNING if started else JobStatus.PENDING
    if all(s is TaskStatus.SUCCEEDED for s in task_statuses):
        return JobStatus.SUCCEEDED
    if TaskStatus.CANCELLED in task_statuses and TaskStatus.FAILED not in task_statuses:
        return JobStatus.CANCELLED
    if any(s is TaskStatus.SUCCEEDED for s in task_statuses):
        return JobStatus.PARTIALLY_FAILED
    return JobStatus.FAILED


def finalize_if_done(store: JobStore, job_id: str) -> str | None:
    """Finalize the job when its last task has just ended and the job is not final yet.

    The chord body normally does this; a chord whose counter was lost (Redis flushed)
    or fired early (a duplicated message counted twice) would otherwise leave the job
    ``running``. Cheap when there is nothing to do: one read."""
    with store.transaction(durable=False) as session:
        statuses = session.scalars(sa.select(Task.status).where(Task.job_id == job_id)).all()
        job = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    if job is None or JobStatus(job).terminal:
        return None
    if not statuses or not all(TaskStatus(s).terminal for s in statuses):
        return None
    return finalize(store, job_id)


def finalize(store: JobStore, job_id: str, in_worker: bool = False) -> str:
    """Recompute and store the job's status and totals; returns the status. A worker
    (``in_worker``) announces the outcome itself when that is only a publish."""
    event: dict[str, Any] | None = None
    with store.transaction() as session:
        # The tasks in the same statement; only the job row is locked.
        job = session.scalar(
            sa.select(Job)
            .options(sa.orm.joinedload(Job.tasks))
            .where(Job.id == job_id)
            .with_for_update(of=Job)
        )
        if job is None:
            return "missing"
        status = job_status([TaskStatus(t.status) for t in job.tasks])
        total = sum(t.total_rows for t in job.tasks)
        changed = job.status != status or job.total_rows != total
        job.status = status
        job.total_rows = total
        if status.terminal and job.finished_at is None:
            job.finished_at = utcnow()
        if changed and status.terminal:
            session.add(
                AuditEvent(
                    job_id=job.id,
                    kind="job.finished",
                    actor="worker",
                    detail={
                        "status": status.value,
                        "total_rows": total,
                        "tasks": {t.service: t.status for t in job.tasks},
                    },
                )
            )
            log.info("job %s %s: %d rows", job_id, status.value, total)
        announce = changed and status.terminal
        if announce and in_worker:
            from tasks.events import event_of  # noqa: PLC0415 - events imports this module

            session.flush()
            event = event_of(job, resources().registry)
    if announce:
        _announce(job_id, in_worker, event)
    return status.value


def _announce(job_id: str, in_worker: bool, event: dict[str, Any] | None = None) -> None:
    """Publish the completion event (and call the webhook), or ask a worker to."""
    from tasks.events import announce_here, announce_job  # noqa: PLC0415 - a cycle

    try:
        if in_worker:
            announce_here(job_id, event)
            return
        announce_job.apply_async((job_id,), queue=get_settings().default_queue)
    except Exception as exc:  # the job is final either way; the event is best effort
        log.warning("completion event for job %s not sent: %s", job_id, type(exc).__name__)
