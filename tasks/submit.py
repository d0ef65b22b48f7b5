"""Submitting an erasure: one job-store transaction creates the job and its tasks, and
only after it commits is the chord sent to the broker."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from celery import chord

from models.jobstore import AuditEvent, Job, JobStatus, JobStore, Task, TaskStatus, utcnow
from models.messages import ErasureRequest
from models.registry import Registry
from tasks.erase import erase_service
from tasks.finalize import finalize_job
from tasks.queues import queue_for
from tasks.resources import resources
from worker.app import app

log = logging.getLogger("eraser.submit")


class SubmitError(Exception):
    """The request cannot become a job (unknown kind or service)."""


class IdempotencyConflict(SubmitError):
    """The idempotency key was used before for a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"idempotency key already used for job {job_id} with a different request")
        self.job_id = job_id


def submit(store: JobStore, registry: Registry, request: ErasureRequest) -> tuple[Job, bool]:
    """Create the job and its tasks; returns (job, created).

    A repeated idempotency key returns the first job (``created`` False), also when
    two submissions race: the unique key lets exactly one insert win.
    """
    if request.subject_kind not in registry.subjects:
        known = ", ".join(sorted(registry.subjects))
        raise SubmitError(f"unknown subject kind {request.subject_kind!r} (known: {known})")
    eligible = registry.services_for(request.subject_kind)
    services = sorted(set(request.services)) if request.services else eligible
    unknown = [s for s in services if s not in eligible]
    if unknown:
        raise SubmitError(
            f"service {unknown[0]!r} is not registered for subject kind {request.subject_kind!r}"
        )
    if not services:
        raise SubmitError(f"no service holds subject kind {request.subject_kind!r}")
    fingerprint = request.fingerprint()
    if request.idempotency_key:
        existing = _by_key(store, request.idempotency_key)
        if existing is not None:
            return _same_request(existing, fingerprint), False
    try:
        with store.transaction() as session:
            job = Job(
                subject_kind=request.subject_kind,
                subject_value=request.subject_value,
                services=services,
                dry_run=request.dry_run,
                idempotency_key=request.idempotency_key,
                request_hash=fingerprint,
                requested_by=request.requested_by,
                reason=request.reason,
            )
            job.tasks = [Task(service=s) for s in services]
            session.add(job)
            session.flush()
            session.add(
                AuditEvent(
                    job_id=job.id,
                    kind="job.submitted",
                    actor=request.requested_by or "anonymous",
                    detail={"services": services, "dry_run": request.dry_run},
                )
            )
    except sa.exc.IntegrityError:
        if not request.idempotency_key:
            raise
        existing = _by_key(store, request.idempotency_key)
        if existing is None:
            raise
        return _same_request(existing, fingerprint), False
    return job, True


def _by_key(store: JobStore, key: str) -> Job | None:
    with store.transaction() as session:
        return session.scalar(sa.select(Job).where(Job.idempotency_key == key))


def _same_request(job: Job, fingerprint: str) -> Job:
    if job.request_hash != fingerprint:
        raise IdempotencyConflict(job.id)
    return job


@app.task(name="eraser.dispatch_job", ignore_result=True)
def dispatch_job(job_id: str) -> None:
    """Build and send the job's chord, from a worker.

    Submitters send this small message (``ignore_result``) instead of the chord
    itself: a chord sent from a client process makes the Redis result backend
    subscribe to every task's result there, for nothing, as the job store is where
    outcomes are read.
    """
    res = resources()
    dispatch(res.store, res.registry, job_id, res.settings.default_queue)


def request_dispatch(job_id: str, default_queue: str) -> None:
    """Ask a worker to dispatch a committed job (call only after the commit)."""
    dispatch_job.apply_async((job_id,), queue=default_queue, ignore_result=True)


def dispatch(store: JobStore, registry: Registry, job_id: str, default_queue: str) -> bool:
    """Send the chord for a committed job's pending tasks, once.

    Task arguments are the job id and the service name only: Flower, logs and the
    broker never see the subject's value. Returns False when the job was already
    dispatched (a repeated dispatch message).
    """
    with store.transaction() as session:
        job = session.scalar(sa.select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.dispatched_at is not None:
            return False
        services = [t.service for t in job.tasks if t.status == TaskStatus.PENDING]
        header = [
            erase_service.si(job_id, s).set(queue=queue_for(registry, s, default_queue))
            for s in services
        ]
        body = finalize_job.s(job_id).set(queue=default_queue)
        if header:
            chord(header)(body)
        else:
            body.clone(args=([],)).apply_async()
        # Stamped in the same transaction: if the commit fails after the send, a
        # second dispatch can happen, and erase_service ignores tasks already done.
        job.dispatched_at = utcnow()
        if header:
            job.status = JobStatus.RUNNING
    log.info("dispatched job %s to %d service(s)", job_id, len(services))
    return True
