"""Exact counts in the job store: an ended execution's counts are replaced by what
its ledger rows in the target add up to (more than its last heartbeat carried, or
less when a server crash undid batches it counted), settling twice changes nothing,
and an execution that died without a ledger leaves the task's counts marked inexact
(a lower bound)."""

from __future__ import annotations

from datetime import timedelta

from models.erasure import TableAction
from models.store.database import JobStore
from models.store.leases import Lease, claim_task, heartbeat, held_task
from models.store.progress import SETTLED, settle
from models.store.tables import Attempt, utcnow
from tests.unit.store.new_job import new_job, set_task, task_of
from worker.execution.ledger import Entry, fold

REMOVING = {TableAction.DELETE}
STALE_AFTER = 30.0


def _claim(store: JobStore, job_id: str, celery_id: str, *, ledger: bool) -> Lease:
    with store.transaction() as session:
        lease = claim_task(
            session,
            job_id,
            "shop",
            celery_id=celery_id,
            redelivered=False,
            worker="w-1",
            stale_after_seconds=STALE_AFTER,
            max_crashes=5,
            removing=REMOVING,
            ledger=ledger,
        )
    assert isinstance(lease, Lease)
    return lease


def _die(
    store: JobStore, job_id: str, lease: Lease, counts: dict[str, int], seq: int | None
) -> None:
    """The execution's last heartbeat carried ``counts`` (ledger row ``seq``), then it died."""
    with store.transaction() as session:
        assert heartbeat(session, lease.task_id, lease.lease_id, counts, sum(counts.values()), seq)
    set_task(store, job_id, heartbeat_at=utcnow() - timedelta(seconds=STALE_AFTER + 1))


def _settle(store: JobStore, lease: Lease, entries: list[Entry]) -> list[str]:
    with store.transaction() as session:
        task = held_task(session, lease.task_id, lease.lease_id)
        assert task is not None
        executions = {e.execution for e in entries}
        truths = {x: fold([e for e in entries if e.execution == x], 0)[1] for x in executions}
        return settle(session, task, truths, REMOVING)


def test_rows_past_the_last_heartbeat_are_settled_once(store: JobStore) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id, "m-1", ledger=True)
    # Three batches of 100 committed; the last heartbeat carried the first two.
    _die(store, job_id, first, {"orders:delete": 200}, 2)
    second = _claim(store, job_id, "m-2", ledger=True)
    assert task_of(store, job_id).total_rows == 200
    entries = [Entry(first.lease_id, s, {"orders:delete": 100}) for s in (1, 2, 3)]

    assert _settle(store, second, entries) == [first.lease_id]
    assert _settle(store, second, entries) == []  # settled: its rows may go
    assert _settle(store, second, []) == []

    task = task_of(store, job_id)
    assert task.total_rows == 300
    assert {r["table"]: r["rows"] for r in task.rows} == {"orders": 300}
    assert task.counts_exact
    assert task.crashes == 1
    with store.transaction() as session:
        attempt = session.query(Attempt).filter_by(lease_id=first.lease_id).one()
        assert (attempt.ledger_seq, attempt.tables) == (SETTLED, {"orders:delete": 300})


def test_batches_a_server_crash_undid_are_taken_back(store: JobStore) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id, "m-1", ledger=True)
    # The heartbeat carried 300 rows; the server then crashed before the last batch
    # reached its disk (an asynchronous commit): the ledger has two rows, and the
    # third batch's rows are back in the table.
    _die(store, job_id, first, {"orders:delete": 300}, 3)
    second = _claim(store, job_id, "m-2", ledger=True)
    entries = [Entry(first.lease_id, s, {"orders:delete": 100}) for s in (1, 2)]

    _settle(store, second, entries)

    task = task_of(store, job_id)
    assert (task.total_rows, task.rows[0]["rows"], task.counts_exact) == (200, 200, True)


def test_a_server_loop_call_counts_its_last_tally_less_the_watermark() -> None:
    rows = [
        Entry("e", 1, {"items:delete": 5}),
        Entry("e", 2, {"call": "c1", "items:delete": 100, "accounts:delete": 1}),
        Entry("e", 3, {"call": "c1", "items:delete": 200, "accounts:delete": 2}),
        Entry("e", 4, {"call": "c1", "items:delete": 300, "accounts:delete": 3}),
        Entry("e", 5, {"items:delete": 7}),
    ]
    assert fold(rows, 0) == (5, {"items:delete": 312, "accounts:delete": 3})
    assert fold(rows, 3) == (5, {"items:delete": 107, "accounts:delete": 1})
    assert fold(rows, 5) == (5, {})


def test_a_crash_without_a_ledger_leaves_the_counts_inexact(store: JobStore) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id, "m-1", ledger=False)
    _die(store, job_id, first, {"orders:delete": 200}, None)

    _claim(store, job_id, "m-2", ledger=False)

    task = task_of(store, job_id)
    assert (task.counts_exact, task.rows_at_most, task.total_rows) == (False, None, 200)


def test_a_crash_with_a_ledger_keeps_the_counts_exact(store: JobStore) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id, "m-1", ledger=True)
    _die(store, job_id, first, {"orders:delete": 200}, 2)

    _claim(store, job_id, "m-2", ledger=True)

    assert task_of(store, job_id).counts_exact


def test_a_lease_abandoned_when_the_job_store_failed_is_no_crash(store: JobStore) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id, "m-1", ledger=True)
    with store.transaction() as session:
        # The same message, sent again after its execution could not record (the
        # lease is still fresh: no waiting for it to go stale either).
        second = claim_task(
            session,
            job_id,
            "shop",
            celery_id="m-1",
            redelivered=False,
            worker="w-1",
            stale_after_seconds=STALE_AFTER,
            max_crashes=1,
            removing=REMOVING,
            ledger=True,
            abandoned=first.lease_id,
        )
    assert isinstance(second, Lease)
    task = task_of(store, job_id)
    assert (task.crashes, task.lease_id) == (0, second.lease_id)
    with store.transaction() as session:
        attempt = session.query(Attempt).filter_by(lease_id=first.lease_id).one()
        assert attempt.outcome == "retry"
