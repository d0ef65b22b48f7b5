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
from tasks.settlement import forget_task, ledger_task, settle_others, try_settle_others
from worker.app import app
from worker.execution.ledger import Ledger
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
    abandoned_lease: str | None = None,
) -> dict[str, Any]:
    """Erase one subject from one service. The ``dead_letter_id`` and
    ``original_task_id`` keywords only appear on dead-letter copies of the message;
    ``abandoned_lease`` on a message sent again after the job store failed mid-run
    (that lease is taken back without counting a crash)."""
    res = resources()
    info = self.request.delivery_info or {}
    delivery = Delivery(
        celery_id=self.request.id,
        redelivered=bool(info.get("redelivered")),
        worker=f"{self.request.hostname} pid {os.getpid()}",
        abandoned_lease=abandoned_lease,
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
        # in the same chord. A lease left behind is taken back by that run, without
        # a crash (the execution ended; its worker did not die).
        left = exc.lease_id if isinstance(exc, AbandonedLease) else abandoned_lease
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
        kwargs = {**(self.request.kwargs or {}), "abandoned_lease": left}
        raise self.retry(countdown=delay, max_retries=None, kwargs=kwargs) from None
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
        timeout = _first_check_ms(registry, settings, service)
        quick = try_nothing_here(
            store, registry, job_id, service, delivery, engine_for, plans, timeout
        )
        if quick is not None:
            return quick
    keeps_ledger = settings.ledger == "auto" and isinstance(registry.services[service], Service)
    lease = claim(store, settings, job_id, service, delivery, ledger=keeps_ledger)
    if isinstance(lease, Outcome):
        return lease
    try:
        return _execute(
            store, registry, settings, job_id, service, lease, engine_for, plans, report_state
        )
    except Exception as exc:
        # Only the job store raises here (the engine's failures are results): the
        # lease is left behind by an execution that ended, not by a worker that died.
        raise AbandonedLease(lease.lease_id) from exc


class AbandonedLease(Exception):
    """The job store failed after this execution claimed its task: the next delivery
    of the message takes the lease back without counting a crash."""

    def __init__(self, lease_id: str) -> None:
        super().__init__("job store unavailable")
        self.lease_id = lease_id


def _execute(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    job_id: str,
    service: str,
    lease: Lease,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache | None,
    report_state: Callable[[int], None] | None,
) -> Outcome:
    """The claimed execution: erase for one slice and record how it ended."""
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
        tables, seq = report.tables, beat.ledger_seq()
        return faulted(store, settings, lease, job_id, service, unverified, None, tables, seq)
    return _succeeded(store, settings, lease, job_id, service, report, engine_for, beat)


def _succeeded(
    store: JobStore,
    settings: Settings,
    lease: Lease,
    job_id: str,
    service: str,
    report: ErasureReport,
    engine_for: Callable[[str], sa.Engine],
    beat: Heartbeat,
) -> Outcome:
    """Record success, once the counts of earlier executions are settled from the
    target's ledger (a target that cannot be read now is a transient fault: success
    is recorded only with every count in)."""
    seq = beat.ledger_seq()
    engine = engine_for(service) if seq is not None else None
    if engine is not None:
        task = ledger_task(job_id, service)
        try:
            if not settle_others(store, engine, lease, task):
                return superseded(job_id, service)
        except Exception as exc:
            fault = classify(exc)
            return faulted(store, settings, lease, job_id, service, fault, exc, report.tables, seq)
    outcome = succeeded(store, lease, job_id, service, report, seq)
    if engine is not None and outcome.finished:
        forget_task(engine, ledger_task(job_id, service))
    return outcome


def _first_check_ms(registry: Registry, settings: Settings, service: str) -> int | None:
    """How long each statement of the first check may wait for a lock: the service's
    lock timeout, at most a third of the reaper's grace before it takes a task's
    message for lost (the check runs before the task is claimed)."""
    definition = registry.services[service]
    if not isinstance(definition, Service):
        return None
    grace_ms = int(settings.dispatch_grace_seconds * 1000 / 3)
    return max(1, min(registry.sql_service(service).lock_timeout_ms, grace_ms))


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
        _settle_on_the_way(store, registry, lease, job_id, service, engine_for, beat)
        return sliced(store, lease, job_id, service, ended.tables, beat.ledger_seq())
    except MissingDatabaseUrl as exc:
        fault = Fault(FaultKind.PERMANENT, "MissingDatabaseUrl", str(exc))
        return faulted(store, settings, lease, job_id, service, fault, exc, beat.tables())
    except Exception as exc:
        fault = classify(exc)
        if fault.description.startswith("internal error"):
            log.error("task %s/%s failed with %s", job_id, service, type(exc).__name__)
        _settle_on_the_way(store, registry, lease, job_id, service, engine_for, beat)
        tables, seq = beat.tables(), beat.ledger_seq()
        return faulted(store, settings, lease, job_id, service, fault, exc, tables, seq)


def _settle_on_the_way(
    store: JobStore,
    registry: Registry,
    lease: Lease,
    job_id: str,
    service: str,
    engine_for: Callable[[str], sa.Engine],
    beat: Heartbeat,
) -> None:
    """Settle earlier executions' counts when an execution ends before success (a
    slice, a fault), if the target answers: a task failed for good keeps them too."""
    if beat.ledger_seq() is None or not isinstance(registry.services[service], Service):
        return
    try:
        engine = engine_for(service)
    except Exception:
        return
    try_settle_others(store, engine, lease, ledger_task(job_id, service))


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
    ledger = None
    if settings.ledger == "auto" and not lease.dry_run:
        ledger = Ledger(
            ledger_task(job_id, service),
            lease.lease_id,
            on_ready=beat.ledger_ready,
            still_held=beat.check_held,
        )
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
        ledger=ledger,
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
