"""``eraser.erase_service``: one (job, service) pair, the chord's header task.

One delivery of the message is one *execution*. It

1. **claims** the task row: a lease id, an attempt row, ``running``. A lease still held
   by an execution whose heartbeat is fresh means someone else is on it: try again
   later. A lease left by an execution that died (stale heartbeat, or this very message
   redelivered after its worker was lost) counts a crash; too many crashes make the
   message a poison message, which is dead-lettered instead of run again;
2. **runs** the engine for at most one time slice, a heartbeat thread keeping the
   lease alive (and noticing when the lease was taken over: the run then stops at the
   next batch boundary, so two executions never erase side by side);
3. **records** the outcome: success; the end of a slice (continue in a new delivery);
   a transient fault (retry with exponential backoff and jitter); a permanent fault or
   exhausted retries (dead letter).

Continuations and retries are Celery retries of the same message, so the task keeps
its chord membership. The task *returns* failures instead of raising them: a header
task that raises keeps the chord body (``finalize_job``) from ever running.

The pieces live beside this module: ``quick_path`` (nothing to erase), ``claims``,
``heartbeat``, ``recording`` and ``retry_policy``; the job store's side of each is a
named operation in ``models.store``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from celery import Task as CeleryTask
from celery.exceptions import Ignore, Reject, Retry

from models.erasure import ErasureReport
from models.registry import Registry, Service, StoreService
from models.settings import MissingDatabaseUrl, Settings
from models.store.database import JobStore
from models.store.leases import Lease
from models.store.sealing import UnreadableSubject
from tasks.claims import claim
from tasks.deadletter import publish_dead_letter
from tasks.execution import Delivery, Outcome
from tasks.finalize import finalize
from tasks.heartbeat import Heartbeat, LeaseLost
from tasks.quick_path import try_nothing_here
from tasks.recording import faulted, sliced, succeeded, superseded
from tasks.resources import resources
from tasks.retry_policy import SUBJECT_LOCK_WAIT_SECONDS, backoff
from worker.app import app
from worker.execution.options import SliceEnded
from worker.faults import Fault, FaultKind, classify
from worker.service import PlanCache, run_service
from worker.stores import open_store

__all__ = ["Delivery", "Outcome", "erase_service", "execute_task"]

log = logging.getLogger("eraser.erase")


@app.task(name="eraser.erase_service", bind=True, max_retries=None)
def erase_service(
    self: CeleryTask[Any, Any],
    job_id: str,
    service: str,
    dead_letter_id: int | None = None,
    original_task_id: str | None = None,
) -> dict[str, Any]:
    """Erase one subject from one service. The ``dead_letter_id`` and
    ``original_task_id`` keywords only appear on dead-letter copies of the message."""
    res = resources()
    info = self.request.delivery_info or {}
    delivery = Delivery(
        celery_id=self.request.id,
        redelivered=bool(info.get("redelivered")),
        worker=f"{self.request.hostname} pid {os.getpid()}",
    )
    try:
        outcome = execute_task(
            res.store,
            res.registry,
            res.settings,
            job_id,
            service,
            delivery,
            engine_for=res.engine_for,
            plans=res.plans,
            report_state=lambda rows: _report_state(self, service, rows),
        )
    except Exception as exc:
        # The job store itself failed (the engine's failures are results, not
        # exceptions): nothing could be recorded, so run the message again later,
        # in the same chord. A lease left behind goes stale and is taken over.
        delay = backoff(
            self.request.retries + 1,
            res.settings.retry_backoff_seconds,
            res.settings.retry_backoff_max_seconds,
        )
        log.warning(
            "task %s/%s: job store unavailable (%s); again in %.1fs",
            job_id,
            service,
            type(exc).__name__,
            delay,
        )
        raise self.retry(countdown=delay, max_retries=None) from None
    return _act_on(self, res.store, job_id, service, outcome)


def _act_on(
    task: CeleryTask[Any, Any], store: JobStore, job_id: str, service: str, outcome: Outcome
) -> dict[str, Any]:
    """Do what the outcome asks of the Celery task, and return its result."""
    if outcome.dead_letter_id is not None:
        publish_dead_letter(job_id, service, outcome.dead_letter_id, task.request.id)
    if outcome.superseded:
        # Another execution holds the task and will count for the chord.
        raise Ignore()
    if outcome.again_in is not None:
        try:
            raise task.retry(countdown=outcome.again_in, max_retries=None)
        except Retry:
            raise
        except Exception as exc:  # the broker is unreachable: let the message come back
            log.warning("task %s/%s: cannot schedule its next run (%s)", job_id, service, exc)
            raise Reject(requeue=True) from None
    if outcome.finished and outcome.last:
        finalize(store, job_id, in_worker=True)
    return outcome.result.model_dump()


def _report_state(task: CeleryTask[Any, Any], service: str, rows: int) -> None:
    try:
        task.update_state(state="PROGRESS", meta={"service": service, "rows": rows})
    except Exception as exc:  # Flower's live view is not worth failing an erasure for
        log.debug("progress state not stored: %s", type(exc).__name__)


def execute_task(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    job_id: str,
    service: str,
    delivery: Delivery | None = None,
    *,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache | None = None,
    report_state: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one execution of a task and record its outcome; never raises for a failed
    erasure (the failure is the result)."""
    delivery = delivery or Delivery()
    if plans is not None:
        quick = try_nothing_here(store, registry, job_id, service, delivery, engine_for, plans)
        if quick is not None:
            return quick
    lease = claim(store, settings, job_id, service, delivery)
    if isinstance(lease, Outcome):
        return lease
    value = _subject_value(store, lease)
    if isinstance(value, Fault):
        return faulted(store, settings, lease, job_id, service, value, None, [])
    with Heartbeat(store, lease, settings.heartbeat_seconds, report_state) as beat:
        ran = _attempt(
            store, registry, settings, job_id, service, lease, value, engine_for, plans, beat
        )
    if isinstance(ran, Outcome):
        return ran
    report = ran
    unverified = _unverified(lease, report)
    if unverified is not None:
        return faulted(store, settings, lease, job_id, service, unverified, None, report.tables)
    return succeeded(store, lease, job_id, service, report)


def _attempt(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    job_id: str,
    service: str,
    lease: Lease,
    value: str,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache | None,
    beat: Heartbeat,
) -> ErasureReport | Outcome:
    """The engine's report, or the recorded outcome of how the attempt ended early (a
    lease taken over, a time slice used up, a fault)."""
    try:
        return _erase(registry, settings, job_id, service, lease, value, engine_for, plans, beat)
    except LeaseLost:
        return superseded(job_id, service)
    except SliceEnded as ended:
        return sliced(store, lease, job_id, service, ended.tables)
    except MissingDatabaseUrl as exc:
        fault = Fault(FaultKind.PERMANENT, "MissingDatabaseUrl", str(exc))
        return faulted(store, settings, lease, job_id, service, fault, exc, beat.tables())
    except Exception as exc:
        fault = classify(exc)
        if fault.description.startswith("internal error"):
            log.error("task %s/%s failed with %s", job_id, service, type(exc).__name__)
        return faulted(store, settings, lease, job_id, service, fault, exc, beat.tables())


def _unverified(lease: Lease, report: ErasureReport) -> Fault | None:
    """A transient fault when an erasure ended with rows of the subject still there:
    they came back faster than the passes removed them (a live writer, a trigger),
    so another attempt is worth it."""
    if lease.dry_run or report.verified:
        return None
    return Fault(
        FaultKind.TRANSIENT,
        "unverified",
        "verification still found rows of the subject after every pass",
    )


def _subject_value(store: JobStore, lease: Lease) -> str | Fault:
    """The subject's value, opened here and only for the engine; a fault (permanent:
    no attempt can do better) when it was purged or no configured key opens it."""
    if lease.sealed_value is None:
        return Fault(FaultKind.PERMANENT, "SubjectPurged", "the subject's value was purged")
    try:
        return store.seal.open(lease.sealed_value)
    except UnreadableSubject as exc:
        return Fault(FaultKind.PERMANENT, "UnreadableSubject", str(exc))


def _erase(
    registry: Registry,
    settings: Settings,
    job_id: str,
    service: str,
    lease: Lease,
    value: str,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache | None,
    beat: Heartbeat,
) -> ErasureReport:
    """Run the engine for at most one time slice, reporting progress to ``beat``; a
    service that is not a SQL database is erased through its store."""
    definition = registry.services[service]
    if not isinstance(definition, Service):
        return _erase_store(
            job_id, service, definition, lease.dry_run, value, beat, lease.subject_kind
        )
    columns = registry.subject_columns(service, lease.subject_kind)
    engine = engine_for(service)
    return run_service(
        engine,
        service,
        registry.sql_service(service),
        lease.subject_kind,
        columns,
        value,
        lease.dry_run,
        beat.progress,
        plans,
        deadline=time.monotonic() + settings.slice_seconds,
        lock_wait_seconds=SUBJECT_LOCK_WAIT_SECONDS,
    )


def _erase_store(
    job_id: str,
    name: str,
    definition: StoreService,
    dry_run: bool,
    value: str,
    beat: Heartbeat,
    subject_kind: str = "",
) -> ErasureReport:
    """A Redis, S3 or http service's erasure (or dry run). The erasure id is opaque (job
    and service): it keeps counts exact when a retry meets batches an earlier attempt
    removed. An http service is told the job id and the subject kind."""
    with open_store(name, definition, subject_kind=subject_kind, job_id=job_id) as store:
        if dry_run:
            return store.preview(value)
        return store.erase(value, beat.progress, erasure_id=f"{job_id}:{name}")
