"""``eraser.finalize_job``: the chord body. The store recomputes the job from its task
rows (``models.store.finalizing``); a job that turned terminal has its completion
event announced. Running it twice changes nothing the second time."""

from __future__ import annotations

import logging
from typing import Any

from models.settings import get_settings
from models.store.database import JobStore
from models.store.finalizing import finalize_job_row, ready_to_finalize
from tasks.resources import resources
from worker.app import app

log = logging.getLogger("eraser.finalize")


@app.task(name="eraser.finalize_job")
def finalize_job(_results: list[Any], job_id: str) -> dict[str, Any]:
    status = finalize(resources().store, job_id, in_worker=True)
    return {"job_id": job_id, "status": status}


def finalize_if_done(store: JobStore, job_id: str) -> str | None:
    """Finalize the job when its last task has just ended and the job is not final yet.

    The chord body normally does this; a chord whose counter was lost (Redis flushed)
    or fired early (a duplicated message counted twice) would otherwise leave the job
    ``running``. Cheap when there is nothing to do: one read."""
    with store.transaction(durable=False) as session:
        ready = ready_to_finalize(session, job_id)
    return finalize(store, job_id) if ready else None


def finalize(store: JobStore, job_id: str, in_worker: bool = False) -> str:
    """Recompute and store the job's status and totals; returns the status. A worker
    (``in_worker``) announces the outcome itself when that is only a publish. The
    reaper finalizes a job whose tasks have all ended, should this be lost."""
    with store.transaction() as session:
        done = finalize_job_row(session, job_id)
    if done is None:
        return "missing"
    if done.announce:
        event = None
        if in_worker:
            from tasks.events import event_of  # noqa: PLC0415 - events imports this module

            event = event_of(done, done.tasks, resources().registry, store.seal, done.sealed_value)
        _announce(job_id, in_worker, event)
    return done.status.value


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
