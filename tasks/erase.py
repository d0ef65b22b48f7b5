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
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from celery import Task as CeleryTask
from celery.exceptions import Ignore, Reject, Retry

from models.erasure import ErasureReport, TableAction, TableOutcome
from models.jobstore import (
    Attempt,
    AttemptOutcome,
    AuditEvent,
    Job,
    JobStore,
    Task,
    TaskStatus,
    new_id,
    utcnow,
)
from models.messages import TaskResult
from models.registry import Registry
from models.settings import MissingDatabaseUrl, Settings
from tasks.deadletter import DeadLetterReason, publish_dead_letter, record_dead_letter
from tasks.finalize import finalize
from tasks.resources import resources
from worker.app import app
from worker.execution.options import Progress, SliceEnded
from worker.faults import Fault, FaultKind, classify
from worker.planning.model import REMOVING
from worker.prepared import Prepared
from worker.service import PlanCache, nothing_here, run_service

log = logging.getLogger("eraser.erase")

#: How long an execution waits for another erasure's per-subject lock before it gives
#: the worker back and tries again later (a busy retry, not counted as a failure).
SUBJECT_LOCK_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Delivery:
    """What the broker says about this execution's message."""

    celery_id: str | None = None
    #: The broker delivered this message before (its worker was lost).
    redelivered: bool = False
    worker: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What an execution ended with, for the Celery task to act on."""

    result: TaskResult
    #: Send the task again after this many seconds (retry, next slice, busy).
    again_in: float | None = None
    #: This execution lost its lease to another one: drop the message quietly.
    superseded: bool = False
    #: The task reached a terminal state in this execution.
    finished: bool = False
    #: Dead letter to publish to the broker (its id), after the commit.
    dead_letter_id: int | None = None
    #: Finished, and the transaction that recorded it saw no other task of the job
    #: still open: this execution finalizes the job (the chord body does too; this
    #: covers a lost chord). Two tasks ending at once may each see the other open;
    #: then the chord body, or the reaper, finalizes.
    last: bool = False


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
    if outcome.dead_letter_id is not None:
        publish_dead_letter(job_id, service, outcome.dead_letter_id, self.request.id)
    if outcome.superseded:
        # Another execution holds the task and will count for the chord.
        raise Ignore()
    if outcome.again_in is not None:
        try:
            raise self.retry(countdown=outcome.again_in, max_retries=None)
        except Retry:
            raise
        except Exception as exc:  # the broker is unreachable: let the message come back
            log.warning("task %s/%s: cannot schedule its next run (%s)", job_id, service, exc)
            raise Reject(requeue=True) from None
    if outcome.finished and outcome.last:
        finalize(res.store, job_id, in_worker=True)
    return outcome.result.model_dump()


def _report_state(task: CeleryTask[Any, Any], service: str, rows: int) -> None:
    try:
        task.update_state(state="PROGRESS", meta={"service": service, "rows": rows})
    except Exception as exc:  # Flower's live view is not worth failing an erasure for
        log.debug("progress state not stored: %s", type(exc).__name__)


@dataclass
class _Claim:
    task_id: int
    lease_id: str
    subject_kind: str
    subject_value: str
    dry_run: bool


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
        quick = _nothing_here(store, registry, job_id, service, delivery, engine_for, plans)
        if quick is not None:
            return quick
    claimed = _claim(store, settings, job_id, service, delivery)
    if isinstance(claimed, Outcome):
        return claimed
    claim = claimed
    with _Heartbeat(store, claim, settings.heartbeat_seconds, report_state) as beat:
        try:
            columns = registry.subject_columns(service, claim.subject_kind)
            engine = engine_for(service)
            report = run_service(
                engine,
                service,
                registry.services[service],
                claim.subject_kind,
                columns,
                claim.subject_value,
                claim.dry_run,
                beat.progress,
                plans,
                deadline=time.monotonic() + settings.slice_seconds,
                lock_wait_seconds=SUBJECT_LOCK_WAIT_SECONDS,
            )
        except _LeaseLost:
            return _superseded(job_id, service)
        except SliceEnded as ended:
            return _record_slice(store, claim, job_id, service, ended.tables)
        except MissingDatabaseUrl as exc:
            fault = Fault(FaultKind.PERMANENT, "MissingDatabaseUrl", str(exc))
            return _record_fault(store, settings, claim, job_id, service, fault, exc, beat.tables())
        except Exception as exc:
            fault = classify(exc)
            if fault.description.startswith("internal error"):
                log.error("task %s/%s failed with %s", job_id, service, type(exc).__name__)
            return _record_fault(store, settings, claim, job_id, service, fault, exc, beat.tables())
    if not claim.dry_run and not report.verified:
        # Rows of the subject came back faster than the passes removed them (a live
        # writer, a trigger): worth another attempt.
        fault = Fault(
            FaultKind.TRANSIENT,
            "unverified",
            "verification still found rows of the subject after every pass",
        )
        return _record_fault(store, settings, claim, job_id, service, fault, None, report.tables)
    return _record_success(store, claim, job_id, service, report.tables, report)


# --- nothing to erase ----------------------------------------------------------------------

#: Task statuses a quick execution may take over.
_QUICK = (TaskStatus.PENDING.value, TaskStatus.RETRYING.value)


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


def _open_others(
    job_id: str | sa.BindParameter[Any], others: sa.ColumnElement[bool]
) -> sa.Select[int]:
    """How many of the job's tasks matching ``others`` are still open."""
    terminal = [s.value for s in TaskStatus if s.terminal]
    return (
        sa.select(sa.func.count())
        .select_from(Task)
        .where(Task.job_id == job_id, others, Task.status.not_in(_listed(terminal)))
    )


def _listed(values: Sequence[str]) -> list[sa.ColumnElement[str]]:
    """``IN`` values written into the statement (a statement to prepare has no lists
    expanded at run time)."""
    return [sa.literal(v, Task.status.type) for v in values]


def _param(column: sa.ColumnElement[Any], name: str | None = None) -> sa.BindParameter[Any]:
    # Not a column's own name: insert() and update() keep those for their VALUES.
    return sa.bindparam(f"q_{name or column.key}", type_=column.type)


_T = Task.__table__.c
_A = Attempt.__table__.c
#: The quick path's update of its task, with the values as parameters (built once). The
#: task may have moved since it was read (or was not read: its job's fields were
#: known): the update takes it only if no execution holds it, it is still open, and no
#: earlier execution of it removed rows.
_QUICK_UPDATE = (
    sa.update(Task)
    .where(
        Task.job_id == _param(_T.job_id),
        Task.service == _param(_T.service),
        Task.status.in_(_listed(_QUICK)),
        Task.lease_id.is_(None),
        Task.total_rows == 0,
    )
    .values(
        status=TaskStatus.SUCCEEDED,
        attempts=Task.attempts + 1,
        rows=_param(_T.rows),
        total_rows=0,
        verified=_param(_T.verified),
        plan_fingerprint=_param(_T.plan_fingerprint),
        error=None,
        celery_id=_param(_T.celery_id),
        retry_at=None,
        heartbeat_at=_param(_T.heartbeat_at, "now"),
        started_at=sa.func.coalesce(Task.started_at, _param(_T.started_at, "started")),
        finished_at=_param(_T.finished_at, "now"),
    )
)
#: The execution's attempt row, succeeded at once.
_QUICK_ATTEMPT_VALUES: dict[str, Any] = {
    "lease_id": _param(_A.lease_id),
    "celery_id": _param(_A.celery_id),
    "worker": _param(_A.worker),
    "started_at": _param(_A.started_at, "started"),
    "finished_at": _param(_A.finished_at, "now"),
    "outcome": sa.literal(AttemptOutcome.SUCCEEDED.value, _A.outcome.type),
    "rows": sa.literal(0, _A.rows.type),
    "tables": sa.literal({}, _A.tables.type),
}
_QUICK_ATTEMPT = sa.insert(Attempt).values(**_QUICK_ATTEMPT_VALUES)
#: How many of the job's other tasks are still open.
_QUICK_OTHERS = _open_others(_param(_T.job_id), Task.service != _param(_T.service))
_QUICK_RECORDS: dict[int, Prepared] = {}


def _quick_record(dialect: sa.Dialect) -> Prepared:
    """PostgreSQL: the update, the attempt row (only if the update matched) and the
    count of the job's other open tasks as one statement, prepared."""
    prepared = _QUICK_RECORDS.get(id(dialect))
    if prepared is None:
        moved = _QUICK_UPDATE.returning(Task.id, Task.attempts).cte("moved")
        columns = ["task_id", "number", *_QUICK_ATTEMPT_VALUES]
        values = [moved.c.id, moved.c.attempts, *_QUICK_ATTEMPT_VALUES.values()]
        recorded = (
            sa.insert(Attempt)
            .from_select(columns, sa.select(*values).select_from(moved))
            .returning(Attempt.id)
            .cte("recorded")
        )
        statement = sa.select(
            sa.select(sa.func.count()).select_from(recorded).scalar_subquery(),
            _QUICK_OTHERS.scalar_subquery(),
        )
        prepared = _QUICK_RECORDS[id(dialect)] = Prepared(statement, dialect)
    return prepared


def _nothing_here(
    store: JobStore,
    registry: Registry,
    job_id: str,
    service: str,
    delivery: Delivery,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache,
) -> Outcome | None:
    """The common case, cheaply: the service holds nothing of the subject. One read of
    the task, the engine's read-only check (no lock), then one transaction records
    the execution as claimed and succeeded at once, provided nobody touched the task
    meanwhile. None: the general path (claim, erase, record) takes over; it also
    covers failures here, which it meets again and records."""
    started = utcnow()
    job = _JOB_FIELDS.get(job_id)
    if job is None:
        with store.engine.connect() as plain:
            # A plain read, outside a transaction: the update below re-checks it.
            found = (
                plain.execution_options(isolation_level="AUTOCOMMIT")
                .execute(
                    sa.select(
                        Task.status,
                        Task.lease_id,
                        Task.total_rows,
                        Job.subject_kind,
                        Job.subject_value,
                        Job.dry_run,
                    )
                    .join(Job, Job.id == Task.job_id)
                    .where(Task.job_id == job_id, Task.service == service)
                )
                .first()
            )
        if found is None:
            return None
        job = _JobFields(found.subject_kind, found.subject_value, found.dry_run)
        _JOB_FIELDS.put(job_id, job)
        if found.lease_id is not None or found.total_rows or found.status not in _QUICK:
            return None
    if job.dry_run:
        return None
    try:
        columns = registry.subject_columns(service, job.subject_kind)
        report = nothing_here(
            engine_for(service),
            service,
            registry.services[service],
            job.subject_kind,
            columns,
            job.subject_value,
            plans,
        )
    except Exception as exc:  # the general path meets it again, and records it
        log.debug("task %s/%s: quick check failed (%s)", job_id, service, type(exc).__name__)
        return None
    if report is None:
        return None
    now = utcnow()
    params: dict[str, Any] = {
        "q_job_id": job_id,
        "q_service": service,
        "q_rows": _merged([], report.tables),
        "q_verified": report.verified,
        "q_plan_fingerprint": report.schema_fingerprint,
        "q_celery_id": delivery.celery_id,
        "q_worker": delivery.worker,
        "q_lease_id": new_id(),
        "q_started": started,
        "q_now": now,
    }
    if store.engine.dialect.name == "postgresql":
        # One statement, one round trip: the update, the attempt row (only if the
        # update matched) and the count of the job's other open tasks; built once and
        # prepared once per connection.
        with store.engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            row = _quick_record(store.engine.dialect).run(conn, params).one()
        done, others = tuple(row)
        if done != 1:
            return None  # someone else moved the task; the general path decides
        last = not others
    else:
        with store.transaction() as session:
            took = session.execute(
                _QUICK_UPDATE.returning(Task.id, Task.attempts).execution_options(
                    synchronize_session=False
                ),
                params,
            ).first()
            if took is None:
                return None  # the general path decides
            session.execute(_QUICK_ATTEMPT.values(task_id=took.id, number=took.attempts), params)
            last = not session.scalar(_QUICK_OTHERS, params)
    log.info("task %s/%s succeeded: nothing of the subject here", job_id, service)
    result = TaskResult(job_id=job_id, service=service, status=TaskStatus.SUCCEEDED, total_rows=0)
    return Outcome(result, finished=True, last=last)


# --- claiming ------------------------------------------------------------------------------


def _claim(
    store: JobStore, settings: Settings, job_id: str, service: str, delivery: Delivery
) -> _Claim | Outcome:
    dead_letter: int | None = None
    with store.transaction() as session:
        # The job's columns come in the same statement (only the task row is locked).
        found = session.execute(
            sa.select(Task, Job.subject_kind, Job.subject_value, Job.dry_run)
            .join(Job, Job.id == Task.job_id)
            .where(Task.job_id == job_id, Task.service == service)
            .with_for_update(of=Task)
        ).first()
        if found is None:
            return Outcome(TaskResult(job_id=job_id, service=service, status="missing"))
        task, subject_kind, subject_value, dry_run = found
        if TaskStatus(task.status).terminal:
            # A duplicated or redelivered message: the first outcome stands.
            return Outcome(_result(task))
        now = utcnow()
        if task.lease_id is not None:
            age = (now - task.heartbeat_at).total_seconds() if task.heartbeat_at else 1e9
            own_redelivery = delivery.redelivered and delivery.celery_id == task.celery_id
            if age < settings.stale_after_seconds and not own_redelivery:
                # Another execution is alive: come back once its lease would be stale.
                wait = settings.stale_after_seconds - age + random.uniform(0.5, 2.0)  # noqa: S311
                return Outcome(_result(task), again_in=min(wait, settings.stale_after_seconds))
            lose_lease(session, task, now, "the worker running it stopped responding")
            if task.crashes >= settings.max_crashes:
                dead_letter = fail_task(
                    session, task, DeadLetterReason.POISON, poison_error(task.crashes), None
                )
        if dead_letter is None:
            lease = new_id()
            task.lease_id = lease
            task.status = TaskStatus.RUNNING
            task.attempts += 1
            task.heartbeat_at = now
            task.started_at = task.started_at or now
            task.celery_id = delivery.celery_id
            task.retry_at = None
            session.add(
                Attempt(
                    task_id=task.id,
                    number=task.attempts,
                    lease_id=lease,
                    celery_id=delivery.celery_id,
                    worker=delivery.worker,
                    started_at=now,
                )
            )
            return _Claim(task.id, lease, subject_kind, subject_value, dry_run)
        result = _result(task)
        last = _none_open(session, task)
    return Outcome(result, finished=True, dead_letter_id=dead_letter, last=last)


def lose_lease(session: sa.orm.Session, task: Task, now: Any, why: str) -> None:
    """Record that the execution holding ``task`` died, keeping the counts its last
    heartbeat carried (its rows are gone: they cannot be counted again)."""
    lost = session.scalar(
        sa.select(Attempt).where(
            Attempt.lease_id == task.lease_id, Attempt.outcome == AttemptOutcome.RUNNING
        )
    )
    if lost is not None:
        lost.outcome = AttemptOutcome.LOST
        lost.finished_at = now
        lost.error = why
        _merge_rows(task, _outcomes(lost.tables or {}))
    task.crashes += 1
    task.lease_id = None


def poison_error(crashes: int) -> str:
    return (
        f"the worker died {crashes} times while running this task; "
        "dead-lettered as a poison message"
    )


def fail_task(
    session: sa.orm.Session,
    task: Task,
    reason: DeadLetterReason,
    error: str,
    exc: BaseException | None,
) -> int:
    """Mark ``task`` failed for good and write its dead letter; returns the letter's id."""
    task.status = TaskStatus.FAILED
    task.error = error
    task.lease_id = None
    task.retry_at = None
    task.finished_at = task.heartbeat_at = utcnow()
    letter = record_dead_letter(session, task, reason, error, exc)
    log.warning("task %s/%s dead-lettered (%s)", task.job_id, task.service, reason.value)
    return letter


# --- the heartbeat -------------------------------------------------------------------------


class _LeaseLost(Exception):
    """Another execution took the task over."""


@dataclass
class _Heartbeat:
    """Keeps the lease alive from a thread while the engine runs, and carries progress
    (the counts of committed batches) into the job store with each beat."""

    store: JobStore
    claim: _Claim
    interval: float
    report_state: Callable[[int], None] | None
    _counts: dict[str, int] = field(default_factory=dict)
    _total: int = 0
    _lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_state: float = 0.0

    def __enter__(self) -> _Heartbeat:
        self._thread = threading.Thread(target=self._run, name="eraser-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def progress(self, p: Progress) -> None:
        """The engine's progress callback (after every committed batch)."""
        self._counts = dict(p.rows_by_table)
        self._total = p.total_rows
        if self._lost.is_set():
            raise _LeaseLost()
        now = time.monotonic()
        if self.report_state is not None and now - self._last_state >= max(self.interval, 0.5):
            self._last_state = now
            self.report_state(p.total_rows)

    def tables(self) -> list[TableOutcome]:
        """What the committed batches of this execution removed so far."""
        return _outcomes(self._counts)

    def _run(self) -> None:
        while not self._stop.wait(max(self.interval, 0.2)):
            try:
                with self.store.transaction(durable=False) as session:
                    updated = session.execute(
                        sa.update(Task)
                        .where(Task.id == self.claim.task_id, Task.lease_id == self.claim.lease_id)
                        .values(heartbeat_at=utcnow())
                    )
                    if updated.rowcount == 0:  # type: ignore[attr-defined]
                        self._lost.set()
                        return
                    counts, total = dict(self._counts), self._total
                    if counts:
                        session.execute(
                            sa.update(Attempt)
                            .where(Attempt.lease_id == self.claim.lease_id)
                            .values(tables=counts, rows=total)
                        )
            except Exception as exc:  # a job-store hiccup: try again next beat
                log.warning("heartbeat not written: %s", type(exc).__name__)


# --- recording outcomes ----------------------------------------------------------------------


@contextmanager
def _held(store: JobStore, claim: _Claim) -> Iterator[tuple[sa.orm.Session, Task | None]]:
    """The task row, locked, if this execution still holds its lease (else None)."""
    with store.transaction() as session:
        task = session.scalar(sa.select(Task).where(Task.id == claim.task_id).with_for_update())
        if task is None or task.lease_id != claim.lease_id:
            yield session, None
        else:
            yield session, task


def _end_attempt(
    session: sa.orm.Session,
    claim: _Claim,
    outcome: AttemptOutcome,
    rows: int,
    error: str | None = None,
) -> None:
    session.execute(
        sa.update(Attempt)
        .where(Attempt.lease_id == claim.lease_id)
        .values(outcome=outcome, rows=rows, error=error, finished_at=utcnow())
    )


def _none_open(session: sa.orm.Session, task: Task) -> bool:
    """Whether no other task of ``task``'s job is open (one statement, in the
    transaction that just ended ``task``)."""
    session.flush()
    return not session.scalar(_open_others(task.job_id, Task.id != task.id))


def _superseded(job_id: str, service: str) -> Outcome:
    log.warning("task %s/%s: lease taken over by another execution; stopping", job_id, service)
    return Outcome(TaskResult(job_id=job_id, service=service, status="running"), superseded=True)


def _record_success(
    store: JobStore,
    claim: _Claim,
    job_id: str,
    service: str,
    tables: Sequence[TableOutcome],
    report: ErasureReport,
) -> Outcome:
    with _held(store, claim) as (session, task):
        if task is None:
            return _superseded(job_id, service)
        _merge_rows(task, tables, removing_total=report.total_rows)
        task.status = TaskStatus.SUCCEEDED
        task.error = None
        task.verified = report.verified
        task.plan_fingerprint = report.schema_fingerprint
        task.lease_id = None
        task.finished_at = task.heartbeat_at = utcnow()
        _end_attempt(session, claim, AttemptOutcome.SUCCEEDED, report.total_rows)
        log.info("task %s/%s succeeded: %d rows", job_id, service, task.total_rows)
        last = _none_open(session, task)
        return Outcome(_result(task), finished=True, last=last)


def _record_slice(
    store: JobStore, claim: _Claim, job_id: str, service: str, tables: Sequence[TableOutcome]
) -> Outcome:
    with _held(store, claim) as (session, task):
        if task is None:
            return _superseded(job_id, service)
        done = _merge_rows(task, tables)
        task.lease_id = None
        task.queued_at = utcnow()
        _end_attempt(session, claim, AttemptOutcome.SLICED, done)
        log.info("task %s/%s: slice ended after %d rows; continuing", job_id, service, done)
        return Outcome(_result(task), again_in=0)


def _record_fault(
    store: JobStore,
    settings: Settings,
    claim: _Claim,
    job_id: str,
    service: str,
    fault: Fault,
    exc: BaseException | None,
    tables: Sequence[TableOutcome],
) -> Outcome:
    with _held(store, claim) as (session, task):
        if task is None:
            return _superseded(job_id, service)
        done = _merge_rows(task, tables)
        if fault.kind is FaultKind.BUSY:
            delay = backoff(
                1, settings.retry_backoff_seconds * 2, settings.retry_backoff_max_seconds
            )
            _end_attempt(session, claim, AttemptOutcome.BUSY, done, fault.description)
            return _schedule(task, delay, fault, job_id, service)
        if fault.kind is FaultKind.TRANSIENT and task.retries < settings.max_retries:
            task.retries += 1
            delay = backoff(
                task.retries, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
            )
            _end_attempt(session, claim, AttemptOutcome.RETRY, done, fault.description)
            session.add(
                AuditEvent(
                    job_id=job_id,
                    kind="task.retry",
                    actor="worker",
                    detail={
                        "service": service,
                        "retry": task.retries,
                        "code": fault.code,
                        "in_seconds": round(delay, 2),
                    },
                )
            )
            return _schedule(task, delay, fault, job_id, service)
        if fault.kind is FaultKind.TRANSIENT:
            reason = DeadLetterReason.RETRIES_EXHAUSTED
            error = f"{fault.description} (gave up after {task.retries} retries)"
        else:
            reason = DeadLetterReason.PERMANENT
            error = fault.description
        _end_attempt(session, claim, AttemptOutcome.FAILED, done, error)
        letter = fail_task(session, task, reason, error, exc)
        last = _none_open(session, task)
        return Outcome(_result(task), finished=True, dead_letter_id=letter, last=last)


def _schedule(task: Task, delay: float, fault: Fault, job_id: str, service: str) -> Outcome:
    now = utcnow()
    task.status = TaskStatus.RETRYING
    task.error = fault.description
    task.lease_id = None
    task.retry_at = now + timedelta(seconds=delay)
    task.queued_at = now
    log.info(
        "task %s/%s: %s fault %s; again in %.1fs", job_id, service, fault.kind, fault.code, delay
    )
    return Outcome(_result(task), again_in=delay)


def backoff(retry: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: a random delay in [base/2, min(cap,
    base * 2**(retry-1))], so retries of many tasks spread out."""
    ceiling = min(cap, base * 2 ** max(retry - 1, 0))
    return random.uniform(min(base / 2, ceiling), ceiling)  # noqa: S311 - not security


def _merged(previous: Sequence[dict[str, Any]], tables: Sequence[TableOutcome]) -> list[Any]:
    """Per-table counts recorded before plus this execution's, sorted."""
    merged: dict[tuple[str, str], int] = {
        (str(r["table"]), str(r["action"])): int(r["rows"]) for r in previous
    }
    for t in tables:
        key = (t.table, str(t.action))
        merged[key] = merged.get(key, 0) + t.rows
    return [
        {"table": table, "action": action, "rows": rows}
        for (table, action), rows in sorted(merged.items())
    ]


def _merge_rows(
    task: Task, tables: Sequence[TableOutcome], removing_total: int | None = None
) -> int:
    """Add this execution's per-table counts to what earlier executions recorded;
    returns this execution's rows. Counts of earlier slices are kept: their rows are
    gone and cannot be counted again."""
    task.rows = _merged(task.rows, tables)
    done = sum(t.rows for t in tables)
    previous = task.total_rows
    if removing_total is None:
        task.total_rows = previous + _removing(tables)
    else:
        task.total_rows = previous + removing_total
    return done


def _outcomes(counts: dict[str, Any]) -> list[TableOutcome]:
    """``{"table:action": rows}`` (the engine's progress shape) as outcomes."""
    outcomes = []
    for key, rows in counts.items():
        table, _, action = key.rpartition(":")
        outcomes.append(TableOutcome(table=table, action=TableAction(action), rows=int(rows)))
    return outcomes


def _removing(tables: Sequence[TableOutcome]) -> int:
    return sum(t.rows for t in tables if t.action in REMOVING)


def _result(task: Task) -> TaskResult:
    return TaskResult(
        job_id=task.job_id, service=task.service, status=task.status, total_rows=task.total_rows
    )
