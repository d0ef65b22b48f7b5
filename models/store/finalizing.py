"""Finalizing a job: its status and totals recomputed from its task rows (never from
a chord's result list, which can hold duplicates or miss parts), and the
``job.finished`` audit event written once, when the job turns terminal. Running it
twice changes nothing the second time.

A job that turns ``succeeded`` or ``cancelled`` loses the subject's value in the same
statement: nothing is left to retry, so nothing of the subject is kept. A failed job
keeps it (sealed) for its retention period (``models.store.purging``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from models.store.tables import AuditEvent, Job, JobStatus, Task, TaskStatus, utcnow

log = logging.getLogger("eraser.finalize")

#: Job statuses that end the subject's value at once: nothing is left to retry.
PURGED_AT_ONCE = (JobStatus.SUCCEEDED, JobStatus.CANCELLED)

#: (service, status, rows, verified) of one task, as the completion event shows it.
TaskLine = tuple[str, str, int, bool]


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


@dataclass(frozen=True)
class Finalized:
    """A job after finalizing, with what its completion event needs."""

    id: str
    subject_kind: str
    #: The value as it was stored before this finalize (sealed; None: purged earlier).
    sealed_value: str | None
    dry_run: bool
    status: JobStatus
    #: Succeeded, no dry run, and no task found a row of the subject.
    nothing_matched: bool
    total_rows: int
    finished_at: datetime | None
    tasks: list[TaskLine]
    #: The job turned terminal (or its totals changed while terminal) just now: the
    #: completion event is due.
    announce: bool


def ready_to_finalize(session: orm.Session, job_id: str) -> bool:
    """Whether the job is not final yet but every one of its tasks has ended."""
    statuses = session.scalars(sa.select(Task.status).where(Task.job_id == job_id)).all()
    job = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    if job is None or JobStatus(job).terminal:
        return False
    return bool(statuses) and all(TaskStatus(s).terminal for s in statuses)


def finalize_job_row(session: orm.Session, job_id: str) -> Finalized | None:
    """Recompute and store the job's status and totals (None: no such job). Plain
    statements, no mapped objects: the last task of a job runs this on the way to
    the submitter seeing the job end. On PostgreSQL its commit does not wait for the
    WAL flush: what it writes is recomputed from the task rows (which are durable)
    by any later finalize."""
    found = _job_and_tasks(session, job_id)
    if not found:
        return None
    job = found[0]
    rows = [r for r in found if r.service is not None]
    tasks = [(str(r.service), str(r.task_status), int(r.task_rows), bool(r.verified)) for r in rows]
    status = job_status([TaskStatus(t[1]) for t in tasks])
    if status is JobStatus.PENDING and job.dispatched_at is not None:
        status = JobStatus.RUNNING  # dispatched, its tasks queued: not the reaper's
    total = sum(t[2] for t in tasks)
    nothing = status is JobStatus.SUCCEEDED and all(r.task_nothing_matched for r in rows)
    changed = job.status != status or job.total_rows != total
    finished_at = job.finished_at
    if status.terminal and finished_at is None:
        finished_at = utcnow()
    values: dict[str, Any] = {}
    if changed or finished_at != job.finished_at or nothing != job.nothing_matched:
        values = {"status": status, "total_rows": total, "finished_at": finished_at}
        values["nothing_matched"] = nothing
    if status in PURGED_AT_ONCE and job.subject_value is not None:
        values.update(subject_value=None, purged_at=utcnow())
    if values:
        session.execute(sa.update(Job).where(Job.id == job_id).values(**values))
    announce = changed and status.terminal
    if announce:
        _audit_finished(session, job_id, status, total, tasks)
    return Finalized(
        id=job.id,
        subject_kind=job.subject_kind,
        sealed_value=job.subject_value,
        dry_run=job.dry_run,
        status=status,
        nothing_matched=nothing,
        total_rows=total,
        finished_at=finished_at,
        tasks=tasks,
        announce=announce,
    )


def _job_and_tasks(session: orm.Session, job_id: str) -> Sequence[Any]:
    """The job row (locked) and its tasks in one statement; on PostgreSQL the same
    statement lets the transaction commit without waiting for the WAL flush."""
    extra = []
    if session.get_bind().dialect.name == "postgresql":
        extra = [sa.func.set_config("synchronous_commit", "off", True)]
    return session.execute(
        sa.select(
            Job.id,
            Job.status,
            Job.total_rows,
            Job.finished_at,
            Job.dispatched_at,
            Job.subject_kind,
            Job.subject_value,
            Job.dry_run,
            Job.nothing_matched,
            Task.service,
            Task.status.label("task_status"),
            Task.total_rows.label("task_rows"),
            Task.verified,
            Task.nothing_matched.label("task_nothing_matched"),
            *extra,
        )
        .join(Task, Task.job_id == Job.id, isouter=True)
        .where(Job.id == job_id)
        .order_by(Task.id)
        .with_for_update(of=Job)
    ).all()


def _audit_finished(
    session: orm.Session, job_id: str, status: JobStatus, total: int, tasks: list[TaskLine]
) -> None:
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


def finished_job(session: orm.Session, job_id: str) -> tuple[Job, list[TaskLine]] | None:
    """The job and its tasks' lines, for its completion event (None: no such job)."""
    job = session.scalar(sa.select(Job).where(Job.id == job_id))
    if job is None:
        return None
    return job, [(t.service, t.status, t.total_rows, t.verified) for t in job.tasks]
