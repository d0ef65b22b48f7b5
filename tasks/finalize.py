"""``eraser.finalize_job``: the chord body. Recomputes the job from its task rows
(a chord's result list can hold duplicates or miss parts), sets totals and status,
writes the audit event. Running it twice changes nothing the second time."""

from __future__ import annotations

import logging
from types import SimpleNamespace
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
    (``in_worker``) announces the outcome itself when that is only a publish. Plain
    statements, no mapped objects: the last task of a job runs this on the way to the
    submitter seeing the job end. Its commit does not wait for the WAL flush: what it
    writes is recomputed from the task rows (which are durable) by any later finalize,
    and the reaper finalizes a job whose tasks have all ended."""
    event: dict[str, Any] | None = None
    with store.transaction() as session:
        # The job row (locked) and its tasks in one statement; on PostgreSQL the same
        # statement lets this transaction commit without waiting for the WAL flush.
        extra = []
        if store.engine.dialect.name == "postgresql":
            extra = [sa.func.set_config("synchronous_commit", "off", True)]
        found = session.execute(
            sa.select(
                Job.id,
                Job.status,
                Job.total_rows,
                Job.finished_at,
                Job.dispatched_at,
                Job.subject_kind,
                Job.subject_value,
                Job.dry_run,
                Task.service,
                Task.status.label("task_status"),
                Task.total_rows.label("task_rows"),
                Task.verified,
                *extra,
            )
            .join(Task, Task.job_id == Job.id, isouter=True)
            .where(Job.id == job_id)
            .order_by(Task.id)
            .with_for_update(of=Job)
        ).all()
        if not found:
            return "missing"
        job = found[0]
        tasks = [
            (str(r.service), str(r.task_status), int(r.task_rows), bool(r.verified))
            for r in found
            if r.service is not None
        ]
        status = job_status([TaskStatus(t[1]) for t in tasks])
        if status is JobStatus.PENDING and job.dispatched_at is not None:
            status = JobStatus.RUNNING  # dispatched, its tasks queued: not the reaper's
        total = sum(t[2] for t in tasks)
        changed = job.status != status or job.total_rows != total
        finished_at = job.finished_at
        if status.terminal and finished_at is None:
            finished_at = utcnow()
        if changed or finished_at != job.finished_at:
            session.execute(
                sa.update(Job)
                .where(Job.id == job_id)
                .values(status=status, total_rows=total, finished_at=finished_at)
            )
        announce = changed and status.terminal
        if announce:
            session.execute(
                sa.insert(AuditEvent).values(
                    job_id=job_id,
                    kind="job.finished",
                    actor="worker",
                    detail={
                        "status": status.value,
                        "total_rows": total,
                        "tasks": {t[0]: t[1] for t in tasks},
                    },
                    created_at=utcnow(),
                )
            )
            log.info("job %s %s: %d rows", job_id, status.value, total)
            if in_worker:
                from tasks.events import event_of  # noqa: PLC0415 - events imports this module

                done = SimpleNamespace(
                    **{
                        "id": job.id,
                        "subject_kind": job.subject_kind,
                        "subject_value": job.subject_value,
                        "dry_run": job.dry_run,
                        "status": status.value,
                        "total_rows": total,
                        "finished_at": finished_at,
                    }
                )
                event = event_of(done, tasks, resources().registry)
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
