"""Settling a task's counts with the target's ledger (``worker.execution.ledger``).

An execution that died, lost its connection while a commit was on the wire, or was
taken over may have committed batches its last heartbeat did not carry; a server
that crashed may have undone batches an execution counted (asynchronous commits).
The ledger rows in the target are what really committed: before a task's outcome is
recorded, the counts of every other ended execution are replaced by what its rows
add up to, in one job-store transaction that marks it settled (settling twice
changes nothing), and its rows are then deleted from the target. The execution
recording the outcome holds the task's session lock in the target for its whole
erasure, so the other executions' sessions had ended before it began: nothing of
them can commit after the settlement.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa

from models.store.database import JobStore
from models.store.leases import Lease, held_task
from models.store.progress import settle, unsettled
from worker.execution import ledger
from worker.planning.model import REMOVING

log = logging.getLogger("eraser.erase")


def ledger_task(job_id: str, service: str) -> str:
    """The name a task's rows carry in the target's ledger (ids only)."""
    return f"{job_id}:{service}"


def settle_others(store: JobStore, engine: sa.Engine, lease: Lease, task: str) -> bool:
    """Settle the counts of the task's other ended executions from the target's
    ledger, then delete their rows there. False: this execution no longer holds the
    task."""
    with store.transaction() as session:
        held = held_task(session, lease.task_id, lease.lease_id)
        if held is None:
            return False
        if not unsettled(session, held):
            return True  # the first execution, or every other one settled: no reading
    by_execution: dict[str, list[ledger.Entry]] = defaultdict(list)
    for entry in ledger.read(engine, task):
        by_execution[entry.execution].append(entry)
    truths = {execution: ledger.fold(rows, 0)[1] for execution, rows in by_execution.items()}
    with store.transaction() as session:
        held = held_task(session, lease.task_id, lease.lease_id)
        if held is None:
            return False
        settled = settle(session, held, truths, REMOVING)
    if settled:
        log.info("task %s: counts of %d earlier execution(s) settled", task, len(settled))
        ledger.forget(engine, task, settled)
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
    except Exception as exc:  # left behind: never read again (the task has ended)
        log.info("task %s: ledger rows not deleted (%s)", task, type(exc).__name__)
