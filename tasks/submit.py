"""Submitting an erasure: one job-store transaction creates the job and its tasks, and
only after it commits is the chord sent to the broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from celery import chord
from sqlalchemy.exc import IntegrityError

from models.messages import ErasureRequest
from models.registry import Registry
from models.store.cancellation import cancel_waiting_tasks
from models.store.database import JobStore
from models.store.dispatch import stamp_dispatch, take_back_dispatch
from models.store.exceptions import IdempotencyConflict, RetryRefused, SubmitError
from models.store.retries import replayable_letter, requeue_failed_tasks
from models.store.submission import create_job, job_for_key, same_request
from models.store.tables import Job, utcnow
from tasks.deadletter import remove_published
from tasks.erase import erase_service
from tasks.finalize import finalize_if_done, finalize_job
from tasks.queues import queue_for
from tasks.resources import resources
from worker.app import app

__all__ = [
    "IdempotencyConflict",
    "RetryRefused",
    "SubmitError",
    "cancel_job",
    "dispatch",
    "dispatch_job",
    "replay_dead_letter",
    "request_dispatch",
    "retry_job",
    "send_chord_for",
    "send_task",
    "submit",
    "submit_and_dispatch",
]

log = logging.getLogger("eraser.submit")


def submit(
    store: JobStore,
    registry: Registry,
    request: ErasureRequest,
    timeout_seconds: float = 86400,
    *,
    dispatching: bool = False,
    owner: str | None = None,
) -> tuple[Job, bool]:
    """Create the job and its tasks; returns (job, created). The reaper fails what is
    left of the job ``timeout_seconds`` after submission. ``dispatching``: the caller
    sends the chord right after the commit (``submit_and_dispatch``), so the job is
    stamped dispatched in the same transaction. ``owner``: the submitting API key's
    id (None: the CLI, embedded or plain Celery).

    A repeated idempotency key of the same owner returns the first job (``created``
    False), also when two submissions race: the unique key lets exactly one insert
    win. Another owner's use of the same key is another job.
    """
    if request.subject_kind not in registry.subjects:
        known = ", ".join(sorted(registry.subjects))
        # The submitted name is not repeated: errors are shown and logged widely.
        raise SubmitError(f"unknown subject kind (known: {known})")
    eligible = registry.services_for(request.subject_kind)
    services = sorted(set(request.services)) if request.services else eligible
    unknown = [s for s in services if s not in eligible]
    if unknown:
        raise SubmitError(
            f"a requested service is not registered for subject kind {request.subject_kind!r} "
            f"(registered: {', '.join(eligible)})"
        )
    if not services:
        raise SubmitError(f"no service holds subject kind {request.subject_kind!r}")
    fingerprint = store.seal.request_hash(request)
    if request.idempotency_key:
        existing = _by_key(store, request.idempotency_key, owner)
        if existing is not None:
            return same_request(existing, fingerprint), False
    try:
        with store.transaction() as session:
            job = create_job(
                session,
                request,
                services,
                seal=store.seal,
                deadline_at=utcnow() + timedelta(seconds=timeout_seconds),
                dispatched_at=utcnow() if dispatching else None,
                owner=owner,
            )
    except IntegrityError:
        if not request.idempotency_key:
            raise
        existing = _by_key(store, request.idempotency_key, owner)
        if existing is None:
            raise
        return same_request(existing, fingerprint), False
    return job, True


def submit_and_dispatch(
    store: JobStore,
    registry: Registry,
    request: ErasureRequest,
    timeout_seconds: float,
    default_queue: str,
    *,
    owner: str | None = None,
) -> tuple[Job, bool]:
    """``submit`` (``owner``: the submitting API key's id), then send the new job's
    chord from here, without a second transaction. A broker that cannot take the
    chord loses nothing: the stamp is taken back and the reaper dispatches the job
    (or, should that fail too, finds its tasks queued with nothing in their queue
    and sends them again)."""
    job, created = submit(store, registry, request, timeout_seconds, dispatching=True, owner=owner)
    if created:
        try:
            with not_watching_results():
                _send_stamped(store, registry, job.id, list(job.services), default_queue)
        except Exception as exc:
            _not_now(job.id, exc)
    return job, created


def _by_key(store: JobStore, key: str, owner: str | None) -> Job | None:
    with store.transaction() as session:
        return job_for_key(session, key, owner)


@app.task(name="eraser.dispatch_job", ignore_result=True)
def dispatch_job(job_id: str) -> None:
    """Build and send the job's chord, from a worker (for messages sent by earlier
    versions, which dispatched through this hop)."""
    res = resources()
    dispatch(res.store, res.registry, job_id, res.settings.default_queue)


def request_dispatch(store: JobStore, registry: Registry, job_id: str, default_queue: str) -> bool:
    """Send a committed job's chord from here (call only after the commit). A broker
    that cannot take it loses nothing: the job stays undispatched in the job store,
    and the reaper sends it. Returns whether it was sent now."""
    try:
        with not_watching_results():
            return dispatch(store, registry, job_id, default_queue)
    except Exception as exc:
        _not_now(job_id, exc)
        return False


def _not_now(job_id: str, exc: Exception) -> None:
    log.warning("job %s not dispatched now (%s); the reaper will", job_id, type(exc).__name__)


@contextmanager
def not_watching_results() -> Iterator[None]:
    """Send tasks without watching their results. The Redis result backend subscribes
    to every task it sends, in the sending process, to be ready for a ``get()``;
    nothing here ever waits on a Celery result (outcomes are read from the job
    store), so a client would only pile up subscriptions. The backend is one object
    per thread: switching this off is local to the calling thread."""
    backend = app.backend
    own = "on_task_call" in vars(backend)
    previous = vars(backend).get("on_task_call")
    backend.on_task_call = _no_watch
    try:
        yield
    finally:
        if own:
            backend.on_task_call = previous
        else:
            del backend.on_task_call


def _no_watch(_producer: object, _task_id: str) -> dict[str, Any]:
    return {}


def dispatch(store: JobStore, registry: Registry, job_id: str, default_queue: str) -> bool:
    """Send the chord for a committed job's pending tasks, once.

    Task arguments are the job id and the service name only: Flower, logs and the
    broker never see the subject's value. Returns False when the job was already
    dispatched (a repeated dispatch message).
    """
    with store.transaction() as session:
        services = stamp_dispatch(session, job_id)
    if services is None:
        return False
    # Sent after the stamp is committed: the stamp locks the task rows, which the
    # first tasks would otherwise wait for.
    _send_stamped(store, registry, job_id, services, default_queue)
    log.info("dispatched job %s to %d service(s)", job_id, len(services))
    return True


def _send_stamped(
    store: JobStore, registry: Registry, job_id: str, services: list[str], default_queue: str
) -> None:
    """Send the chord of a job whose dispatch stamp is committed. A send that fails
    takes the stamp back (the reaper then dispatches the job) and raises; should
    that fail too, the reaper finds the tasks queued with nothing in their queue and
    sends them again."""
    try:
        send_chord_for(registry, job_id, services, default_queue)
    except Exception:
        _unstamp(store, job_id)
        raise


def _unstamp(store: JobStore, job_id: str) -> None:
    try:
        with store.transaction() as session:
            take_back_dispatch(session, job_id)
    except Exception as exc:
        log.warning("job %s: dispatch not taken back (%s)", job_id, type(exc).__name__)


def send_chord_for(
    registry: Registry, job_id: str, services: Sequence[str], default_queue: str
) -> None:
    header = [
        erase_service.si(job_id, s).set(queue=queue_for(registry, s, default_queue))
        for s in services
    ]
    body = finalize_job.s(job_id).set(queue=default_queue)
    if header:
        chord(header)(body)
    else:
        body.clone(args=([],)).apply_async()


def send_task(registry: Registry, job_id: str, service: str, default_queue: str) -> None:
    """Send one task on its own, outside any chord (the reaper's re-dispatch); the task
    finalizes the job itself when it is the last to end."""
    erase_service.si(job_id, service).apply_async(queue=queue_for(registry, service, default_queue))


def retry_job(
    store: JobStore,
    registry: Registry,
    job_id: str,
    default_queue: str,
    *,
    services: Sequence[str] = (),
    dead_letter_ids: Sequence[int] = (),
    actor: str = "cli",
    timeout_seconds: float = 86400,
) -> list[str]:
    """Re-run only the failed tasks of a job (or the named ones), in a new chord that
    ends in a fresh finalize. Each task keeps its history and the rows it already
    removed. Returns the services sent again."""
    # The chord goes out after the commit: a worker quicker than the commit would
    # find the task still failed and skip it. Should the send fail, the tasks are
    # pending with a queue stamp, and the reaper sends them again.
    with store.transaction() as session:
        requeued = requeue_failed_tasks(
            session,
            job_id,
            services=services,
            dead_letter_ids=dead_letter_ids,
            actor=actor,
            deadline_at=utcnow() + timedelta(seconds=timeout_seconds),
        )
    names = requeued.services
    send_chord_for(registry, job_id, names, default_queue)
    remove_published(requeued.replayed)
    log.info("job %s: retrying %s", job_id, ", ".join(names))
    return names


def replay_dead_letter(
    store: JobStore,
    registry: Registry,
    dead_letter_id: int,
    default_queue: str,
    *,
    actor: str = "cli",
    timeout_seconds: float = 86400,
) -> tuple[str, str]:
    """Replay one dead letter: re-run its task in a new chord; returns (job, service)."""
    with store.transaction() as session:
        job_id, service = replayable_letter(session, dead_letter_id)
    retry_job(
        store,
        registry,
        job_id,
        default_queue,
        services=[service],
        dead_letter_ids=[dead_letter_id],
        actor=actor,
        timeout_seconds=timeout_seconds,
    )
    return job_id, service


def cancel_job(store: JobStore, job_id: str, *, actor: str = "cli") -> list[str]:
    """Cancel the job's tasks that have not started; returns their services. Tasks
    already running finish (their erasure is not cut off mid-way); the job ends when
    they do. A cancelled task's message, when it arrives, finds it done."""
    with store.transaction() as session:
        names = cancel_waiting_tasks(session, job_id, actor)
    finalize_if_done(store, job_id)
    return names
