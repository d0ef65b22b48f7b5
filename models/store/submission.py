"""Creating a job: the job row (the subject's value sealed, its hashes keyed), one task
row per service and the audit event, in the caller's transaction; and finding the job
a repeated idempotency key names, within the keys of one owner (an API key id): the
same idempotency key from another API key is another job, and tells nothing about
this one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from models.messages import ErasureRequest
from models.store.exceptions import IdempotencyConflict
from models.store.sealing import SubjectSeal
from models.store.tables import NO_OWNER, AuditEvent, Job, JobStatus, Task


def job_for_key(session: orm.Session, key: str, owner: str | None = None) -> Job | None:
    """The job ``owner`` (an API key id; None: no API key) first used an idempotency
    key for (None when it is new to that owner)."""
    return session.scalar(
        sa.select(Job).where(Job.owner == (owner or NO_OWNER), Job.idempotency_key == key)
    )


def same_request(job: Job, fingerprint: str) -> Job:
    """``job``, when it was made from the request whose fingerprint is given; a reused
    key with another body raises ``IdempotencyConflict``."""
    if job.request_hash != fingerprint:
        raise IdempotencyConflict(job.id)
    return job


def create_job(
    session: orm.Session,
    request: ErasureRequest,
    services: Sequence[str],
    *,
    seal: SubjectSeal,
    deadline_at: datetime,
    dispatched_at: datetime | None = None,
    owner: str | None = None,
) -> Job:
    """Add the job, its tasks and the ``job.submitted`` audit event. ``dispatched_at``:
    the caller sends the chord right after the commit, so the job is stamped running
    and its tasks queued now. ``owner``: the submitting API key's id. A repeated
    idempotency key of the same owner fails at the flush (unique)."""
    job = Job(
        subject_kind=request.subject_kind,
        subject_value=seal.seal(request.subject_value),
        subject_hash=seal.subject_hash(request.subject_kind, request.subject_value),
        services=list(services),
        dry_run=request.dry_run,
        owner=owner or NO_OWNER,
        idempotency_key=request.idempotency_key,
        request_hash=seal.request_hash(request),
        requested_by=request.requested_by,
        reason=request.reason,
        deadline_at=deadline_at,
    )
    job.tasks = [Task(service=s) for s in services]
    if dispatched_at is not None:
        job.dispatched_at = dispatched_at
        job.status = JobStatus.RUNNING
        for task in job.tasks:
            task.queued_at = dispatched_at
    session.add(job)
    session.flush()
    session.add(
        AuditEvent(
            job_id=job.id,
            kind="job.submitted",
            actor=request.requested_by or "anonymous",
            detail={"services": list(services), "dry_run": request.dry_run},
        )
    )
    return job
