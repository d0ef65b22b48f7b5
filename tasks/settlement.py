"""Settling a task's counts with the target's ledger (``worker.execution.ledger``).

An execution that died, lost its connection while a commit was on the wire, or was
taken over may have committed batches its last heartbeat did not carry. Their ledger
rows are in the target: before a task's outcome is recorded, the rows of every other
execution past its watermark are folded into the counts, in one job-store
transaction that moves the watermarks on (folding twice adds nothing), and then
deleted from the target. The execution recording the outcome holds the task's
session lock in the target for its whole erasure, so a dead execution's session had
ended before it began: nothing of it can commit after the fold.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa

from models.store.database import JobStore
from models.store.leases import Lease, held_task
from models.store.progress import Folded, settle, watermarks
from worker.execution import ledger
from worker.planning.model import REMOVING

log = logging.getLogger("eraser.erase")


def ledger_task(job_id: str, service: str) -> str:
    """The name a task's rows carry in the target's ledger (ids only)."""
    return f"{job_id}:{service}"


def settle_others(store: JobStore, engine: sa.Engine, lease: Lease, task: str) -> bool:
    """Fold the ledger rows of the task's other executions into its counts, then
    delete them from the target. False: this execution no longer holds the task."""
    entries = ledger.read(engine, task)
    by_execution: dict[str, list[ledger.Entry]] = defaultdict(list)
    for entry in entries:
        if entry.execution != lease.lease_id:
            by_execution[entry.execution].append(entry)
    if not by_execution:
        return True
    with store.transaction() as session:
        held = held_task(session, lease.task_id, lease.lease_id)
        if held is None:
            return False
        marks = watermarks(session, lease.task_id)
        folds: dict[str, Folded] = {}
        for execution, rows in by_execution.items():
            if execution not in marks:
                continue  # not an execution of this task's job store (left alone)
            since = marks[execution]
            last, added = ledger.fold(rows, since or 0)
            folds[execution] = Folded(since, last, added)
        folded = settle(session, held, folds, REMOVING)
    if folded:
        log.info("task %s: counts of %d earlier execution(s) settled", task, len(folded))
    ledger.forget(engine, task, folded)
    return True


def try_settle_others(store: JobStore, engine: sa.Engine, lease: Lease, task: str) -> None:
    """``settle_others``, when the target answers (an execution ending with a fault
    may not reach it; a later one settles then)."""
    try:
        settle_others(store, engine, lease, task)
    except Exception as exc:
        log.info("task %s: counts not settled now (%s)", task, type(exc).__name__)


def forget_task(engine: sa.Engine, task: str) -> None:
    """Delete all the task's ledger rows once its outcome holds every count."""
    try:
        ledger.forget(engine, task)
    except Exception as exc:  # left behind: past every watermark, never folded again
        log.info("task %s: ledger rows not deleted (%s)", task, type(exc).__name__)
