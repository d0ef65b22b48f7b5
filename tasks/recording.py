"""Recording how an execution ended, through the store's operations: success, the
end of a time slice, or a fault (a busy subject, a transient fault retried with
backoff, a permanent fault or exhausted retries dead-lettered). Each writes only if
the execution still holds its lease; otherwise the execution was superseded."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from models.erasure import ErasureReport, TableOutcome
from models.messages import TaskResult
from models.settings import Settings
from models.store.database import JobStore
from models.store.dead_letters import DeadLetterReason
from models.store.faults import fail_task, postpone, schedule_retry
from models.store.leases import Lease, held_task
from models.store.outcomes import Counted, end_attempt, others_open, record_slice, record_success
from models.store.outcomes import task_result as result_of
from models.store.progress import add_rows, mark_inexact, removed_rows
from models.store.tables import AttemptOutcome
from tasks.deadletter import format_frames
from tasks.execution import Outcome
from tasks.retry_policy import backoff, busy_delay
from worker.faults import Fault, FaultKind, connection_lost
from worker.planning.model import REMOVING

log = logging.getLogger("eraser.erase")


def superseded(job_id: str, service: str) -> Outcome:
    """The outcome of an execution whose lease another execution took over."""
    log.warning("task %s/%s: lease taken over by another execution; stopping", job_id, service)
    return Outcome(TaskResult(job_id=job_id, service=service, status="running"), superseded=True)


def succeeded(
    store: JobStore,
    lease: Lease,
    job_id: str,
    service: str,
    report: ErasureReport,
    ledger_seq: int | None = None,
) -> Outcome:
    """The execution erased (or counted) everything and verified it (its counts reach
    ledger row ``ledger_seq``)."""
    with store.transaction() as session:
        task = held_task(session, lease.task_id, lease.lease_id)
        if task is None:
            return superseded(job_id, service)
        record_success(
            session,
            task,
            lease.lease_id,
            report.tables,
            removed=report.total_rows,
            verified=report.verified,
            fingerprint=report.schema_fingerprint,
            dry_run=lease.dry_run,
            ledger_seq=ledger_seq,
        )
        log.info("task %s/%s succeeded: %d rows", job_id, service, task.total_rows)
        last = others_open(session, task) == 0
        return Outcome(result_of(task), finished=True, last=last)


def sliced(
    store: JobStore,
    lease: Lease,
    job_id: str,
    service: str,
    tables: Sequence[TableOutcome],
    ledger_seq: int | None = None,
) -> Outcome:
    """The execution's time slice ended: the work continues in a new delivery."""
    with store.transaction() as session:
        task = held_task(session, lease.task_id, lease.lease_id)
        if task is None:
            return superseded(job_id, service)
        removed = removed_rows(tables, REMOVING)
        done = record_slice(session, task, lease.lease_id, tables, removed, ledger_seq)
        log.info("task %s/%s: slice ended after %d rows; continuing", job_id, service, done)
        return Outcome(result_of(task), again_in=0)


def faulted(
    store: JobStore,
    settings: Settings,
    lease: Lease,
    job_id: str,
    service: str,
    fault: Fault,
    exc: BaseException | None,
    tables: Sequence[TableOutcome],
    ledger_seq: int | None = None,
) -> Outcome:
    """The execution met a fault: try again later, or fail the task for good. Its
    counts reach ledger row ``ledger_seq``; without a ledger, a connection lost while
    a commit may have been on the wire leaves the counts inexact."""
    with store.transaction() as session:
        task = held_task(session, lease.task_id, lease.lease_id)
        if task is None:
            return superseded(job_id, service)
        done = add_rows(task, tables, removed_rows(tables, REMOVING))
        if ledger_seq is None and not lease.dry_run and connection_lost(exc):
            mark_inexact(task)
        counted = Counted(tables, ledger_seq)
        base, cap = settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
        if fault.kind is FaultKind.BUSY:
            delay = busy_delay(base, cap)
            end_attempt(
                session, lease.lease_id, AttemptOutcome.BUSY, done, fault.description, counted
            )
            postpone(task, delay, fault.description)
            return _again(result_of(task), delay, fault, job_id, service)
        if fault.kind is FaultKind.TRANSIENT and task.retries < settings.max_retries:
            delay = backoff(task.retries + 1, base, cap)
            end_attempt(
                session, lease.lease_id, AttemptOutcome.RETRY, done, fault.description, counted
            )
            schedule_retry(session, task, delay, fault.description, fault.code)
            return _again(result_of(task), delay, fault, job_id, service)
        reason, error = _gave_up(fault, task.retries)
        end_attempt(session, lease.lease_id, AttemptOutcome.FAILED, done, error, counted)
        letter = fail_task(session, task, reason, error, format_frames(exc))
        last = others_open(session, task) == 0
        return Outcome(result_of(task), finished=True, dead_letter_id=letter, last=last)


def _gave_up(fault: Fault, retries: int) -> tuple[DeadLetterReason, str]:
    """Why the task fails for good, and its error."""
    if fault.kind is FaultKind.TRANSIENT:
        error = f"{fault.description} (gave up after {retries} retries)"
        return DeadLetterReason.RETRIES_EXHAUSTED, error
    return DeadLetterReason.PERMANENT, fault.description


def _again(result: TaskResult, delay: float, fault: Fault, job_id: str, service: str) -> Outcome:
    log.info(
        "task %s/%s: %s fault %s; again in %.1fs", job_id, service, fault.kind, fault.code, delay
    )
    return Outcome(result, again_in=delay)
