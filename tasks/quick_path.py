"""The common case, cheaply: the service holds nothing of the subject. One read of the
task (skipped when its job's fields are cached), the engine's read-only check (no
lock), then one write records the execution as claimed and succeeded at once,
provided nobody touched the task meanwhile."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from models.messages import TaskResult
from models.registry import Registry, Service
from models.store.database import JobStore
from models.store.nothing_found import NothingFound, quick_fields, record_nothing_found
from models.store.sealing import UnreadableSubject
from models.store.tables import TaskStatus, utcnow
from tasks.execution import Delivery, Outcome
from worker.prepared import Prepared
from worker.service import PlanCache, nothing_here

log = logging.getLogger("eraser.erase")


@dataclass(frozen=True)
class _JobFields:
    """What an execution needs of its job; fixed when the job is created."""

    subject_kind: str
    subject_value: str
    dry_run: bool


class _JobCache:
    """The last few hundred jobs' fixed fields, per worker process: a job's tasks run
    one after another in the same processes, and each would read them again."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[str, _JobFields] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> _JobFields | None:
        with self._lock:
            found = self._items.get(job_id)
            if found is not None:
                self._items.move_to_end(job_id)
            return found

    def put(self, job_id: str, fields: _JobFields) -> None:
        with self._lock:
            self._items[job_id] = fields
            self._items.move_to_end(job_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_JOB_FIELDS = _JobCache()


def _job_fields(store: JobStore, job_id: str, service: str) -> _JobFields | None:
    """The job's fields (cached), or None when the task is missing or was touched (the
    general path decides then)."""
    job = _JOB_FIELDS.get(job_id)
    if job is not None:
        return job
    found = quick_fields(store, job_id, service)
    if found is None or found.sealed_value is None:
        return None
    try:
        value = store.seal.open(found.sealed_value)
    except UnreadableSubject:
        return None  # the general path records the fault
    job = _JobFields(found.subject_kind, value, found.dry_run)
    _JOB_FIELDS.put(job_id, job)
    return job if found.untouched else None


def try_nothing_here(
    store: JobStore,
    registry: Registry,
    job_id: str,
    service: str,
    delivery: Delivery,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache,
    timeout_ms: int | None = None,
) -> Outcome | None:
    """The outcome when the service holds nothing of the subject and the task was
    recorded succeeded at once. None: the general path (claim, erase, record) takes
    over; it also covers failures here, which it meets again and records.

    The check runs before the task is claimed, so nothing marks the task received
    while it runs: each statement may wait at most ``timeout_ms`` for a lock (the
    service's lock timeout, kept well under the reaper's grace period for a message
    seen lost). A table locked longer sends the task the general way, which claims it
    first and waits under its heartbeat."""
    started = utcnow()
    if not isinstance(registry.services[service], Service):
        return None  # the quick check is the SQL engine's; a store's erasure counts anyway
    job = _job_fields(store, job_id, service)
    if job is None or job.dry_run:
        return None
    try:
        columns = registry.subject_columns(service, job.subject_kind)
        report = nothing_here(
            engine_for(service),
            service,
            registry.sql_service(service),
            job.subject_kind,
            columns,
            job.subject_value,
            plans,
            timeout_ms,
        )
    except Exception as exc:  # the general path meets it again, and records it
        log.debug("task %s/%s: quick check failed (%s)", job_id, service, type(exc).__name__)
        return None
    if report is None:
        return None
    found = NothingFound(
        job_id=job_id,
        service=service,
        tables=report.tables,
        verified=report.verified,
        fingerprint=report.schema_fingerprint,
        celery_id=delivery.celery_id,
        worker=delivery.worker,
        started=started,
        now=utcnow(),
    )
    last = record_nothing_found(store, found, Prepared)
    if last is None:
        return None  # someone else moved the task; the general path decides
    log.info("task %s/%s succeeded: nothing of the subject here", job_id, service)
    result = TaskResult(job_id=job_id, service=service, status=TaskStatus.SUCCEEDED, total_rows=0)
    return Outcome(result, finished=True, last=last)
