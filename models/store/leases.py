"""Leases: which execution holds a task. An execution claims the task (a lease id, an
attempt row, ``running``), keeps the lease alive with heartbeats, and loses it when
its heartbeat goes stale (its worker died); the counts its last heartbeat carried are
kept. Too many lost leases make the task a poison message, failed for good."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from models.erasure import TableAction
from models.messages import TaskResult
from models.store.dead_letters import DeadLetterReason
from models.store.faults import fail_task, poison_error
from models.store.outcomes import others_open, task_result
from models.store.progress import add_rows, as_outcomes, mark_inexact, removed_rows
from models.store.tables import Attempt, AttemptOutcome, Job, Task, TaskStatus, new_id, utcnow


@dataclass(frozen=True)
class Lease:
    """A claimed task, and what its execution needs of the job."""

    task_id: int
    lease_id: str
    subject_kind: str
    #: The subject's value as stored: sealed (``JobStore.seal.open`` reads it), None
    #: once purged.
    sealed_value: str | None
    dry_run: bool


@dataclass(frozen=True)
class NotClaimed:
    """Why the task was not claimed: missing, finished, or held by a live execution
    (``held_for`` seconds since its last heartbeat), or dead-lettered as a poison
    message just now (``dead_letter_id``)."""

    result: TaskResult
    held_for: float | None = None
    dead_letter_id: int | None = None
    #: Dead-lettered, and no other task of the job is still open.
    last: bool = False


def claim_task(
    session: orm.Session,
    job_id: str,
    service: str,
    *,
    celery_id: str | None,
    redelivered: bool,
    worker: str | None,
    stale_after_seconds: float,
    max_crashes: int,
    removing: Collection[TableAction],
    ledger: bool = False,
    abandoned: str | None = None,
) -> Lease | NotClaimed:
    """Take the task's lease for a new execution (``ledger``: it keeps a ledger in
    the target, unless it says otherwise before its first batch). A lease still held by an execution
    whose heartbeat is fresh is left alone, unless this is that execution's own
    message redelivered (its worker was lost): then, as for a stale heartbeat, the
    old execution counts a crash. The lease ``abandoned`` (this message's previous
    execution ended when the job store failed) is taken back at once, no crash."""
    # The job's columns come in the same statement (only the task row is locked).
    found = session.execute(
        sa.select(Task, Job.subject_kind, Job.subject_value, Job.dry_run)
        .join(Job, Job.id == Task.job_id)
        .where(Task.job_id == job_id, Task.service == service)
        .with_for_update(of=Task)
    ).first()
    if found is None:
        return NotClaimed(TaskResult(job_id=job_id, service=service, status="missing"))
    task, subject_kind, subject_value, dry_run = found
    if TaskStatus(task.status).terminal:
        # A duplicated or redelivered message: the first outcome stands.
        return NotClaimed(task_result(task))
    now = utcnow()
    if task.lease_id is not None and task.lease_id == abandoned:
        lose_lease(session, task, now, "the job store failed during it", removing, crashed=False)
    if task.lease_id is not None:
        age = (now - task.heartbeat_at).total_seconds() if task.heartbeat_at else 1e9
        own_redelivery = redelivered and celery_id == task.celery_id
        if age < stale_after_seconds and not own_redelivery:
            return NotClaimed(task_result(task), held_for=age)
        lose_lease(session, task, now, "the worker running it stopped responding", removing)
        if task.crashes >= max_crashes:
            error = poison_error(task.crashes)
            letter = fail_task(session, task, DeadLetterReason.POISON, error, None)
            return NotClaimed(
                task_result(task), dead_letter_id=letter, last=others_open(session, task) == 0
            )
    lease = new_id()
    task.lease_id = lease
    task.status = TaskStatus.RUNNING
    task.attempts += 1
    task.heartbeat_at = now
    task.started_at = task.started_at or now
    task.celery_id = celery_id
    task.retry_at = None
    session.add(
        Attempt(
            task_id=task.id,
            number=task.attempts,
            lease_id=lease,
            celery_id=celery_id,
            worker=worker,
            started_at=now,
            ledger_seq=0 if ledger else None,
        )
    )
    return Lease(task.id, lease, subject_kind, subject_value, dry_run)


def lose_lease(
    session: orm.Session,
    task: Task,
    now: datetime,
    why: str,
    removing: Collection[TableAction],
    *,
    crashed: bool = True,
) -> None:
    """Record that the execution holding ``task`` died (``crashed``: with its worker;
    otherwise it ended without recording, a retry), keeping the counts its last
    heartbeat carried (its rows are gone: they cannot be counted again)."""
    lost = session.scalar(
        sa.select(Attempt).where(
            Attempt.lease_id == task.lease_id, Attempt.outcome == AttemptOutcome.RUNNING
        )
    )
    if lost is not None:
        lost.outcome = AttemptOutcome.LOST if crashed else AttemptOutcome.RETRY
        lost.finished_at = now
        lost.error = why
        tables = as_outcomes(lost.tables or {})
        add_rows(task, tables, removed_rows(tables, removing))
        if lost.ledger_seq is None:
            # No ledger to read back what it committed after its last heartbeat.
            mark_inexact(task)
    if crashed:
        task.crashes += 1
    task.lease_id = None


def heartbeat(
    session: orm.Session,
    task_id: int,
    lease_id: str,
    counts: dict[str, Any],
    total: int,
    ledger_seq: int | None = None,
) -> bool:
    """Move the task's heartbeat and store the counts of the execution's committed
    batches (``{"table:action": rows}``, ``total`` removed) with the seq of the last
    ledger row they include (its watermark), in one statement. False: the lease is no
    longer this execution's (another one took the task over)."""
    updated = session.execute(
        sa.update(Task)
        .where(Task.id == task_id, Task.lease_id == lease_id)
        .values(heartbeat_at=utcnow())
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        return False
    if counts:
        session.execute(
            sa.update(Attempt)
            .where(Attempt.lease_id == lease_id)
            .values(tables=counts, rows=total, ledger_seq=ledger_seq)
        )
    return True


def held_task(session: orm.Session, task_id: int, lease_id: str) -> Task | None:
    """The task row, locked, if the execution of ``lease_id`` still holds it."""
    task = session.scalar(sa.select(Task).where(Task.id == task_id).with_for_update())
    if task is None or task.lease_id != lease_id:
        return None
    return task


def keeps_no_ledger(session: orm.Session, lease_id: str) -> None:
    """The execution of ``lease_id`` found no ledger in its target (before any batch):
    what it commits can only be counted by its heartbeats."""
    session.execute(sa.update(Attempt).where(Attempt.lease_id == lease_id).values(ledger_seq=None))


def holds(session: orm.Session, task_id: int, lease_id: str) -> bool:
    """Whether the execution of ``lease_id`` still holds the task (no lock taken)."""
    found = session.scalar(sa.select(Task.lease_id).where(Task.id == task_id))
    return found == lease_id
