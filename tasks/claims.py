"""Claiming a task for one execution: the store takes the lease; what it refuses
becomes the execution's outcome (missing, finished, held by a live execution, or
dead-lettered as a poison message)."""

from __future__ import annotations

from models.settings import Settings
from models.store.database import JobStore
from models.store.leases import Lease, NotClaimed, claim_task
from tasks.execution import Delivery, Outcome
from tasks.retry_policy import wait_for_lease
from worker.planning.model import REMOVING


def claim(
    store: JobStore,
    settings: Settings,
    job_id: str,
    service: str,
    delivery: Delivery,
    *,
    ledger: bool = False,
) -> Lease | Outcome:
    """The lease of a new execution (``ledger``: it keeps the target's ledger), or the
    outcome of not getting one."""
    with store.transaction() as session:
        claimed = claim_task(
            session,
            job_id,
            service,
            celery_id=delivery.celery_id,
            redelivered=delivery.redelivered,
            worker=delivery.worker,
            stale_after_seconds=settings.stale_after_seconds,
            max_crashes=settings.max_crashes,
            removing=REMOVING,
            ledger=ledger,
            abandoned=delivery.abandoned_lease,
        )
    if isinstance(claimed, Lease):
        return claimed
    return _refused(claimed, settings)


def _refused(refused: NotClaimed, settings: Settings) -> Outcome:
    if refused.held_for is not None:
        # Another execution is alive: come back once its lease would be stale.
        wait = wait_for_lease(refused.held_for, settings.stale_after_seconds)
        return Outcome(refused.result, again_in=wait)
    if refused.dead_letter_id is not None:
        return Outcome(
            refused.result, finished=True, dead_letter_id=refused.dead_letter_id, last=refused.last
        )
    return Outcome(refused.result)
