"""``models.store.leases``: claiming a task, heartbeats, and leases lost by executions
that died (their counts kept, their crashes counted, a poison message failed)."""

from __future__ import annotations

from datetime import timedelta

from models.erasure import TableAction
from models.store.database import JobStore
from models.store.leases import Lease, NotClaimed, claim_task, heartbeat, held_task
from models.store.tables import DeadLetter, TaskStatus, utcnow
from tests.unit.store.new_job import new_job, outcomes_of, set_task, task_of

REMOVING = {TableAction.DELETE}
STALE_AFTER = 30.0


def _claim(
    store: JobStore, job_id: str, *, celery_id: str = "m-1", redelivered: bool = False
) -> Lease | NotClaimed:
    with store.transaction() as session:
        return claim_task(
            session,
            job_id,
            "shop",
            celery_id=celery_id,
            redelivered=redelivered,
            worker="w-1",
            stale_after_seconds=STALE_AFTER,
            max_crashes=2,
            removing=REMOVING,
        )


def test_a_claim_takes_the_lease_and_starts_an_attempt(store: JobStore) -> None:
    job_id = new_job(store)

    lease = _claim(store, job_id)

    assert isinstance(lease, Lease)
    assert (lease.subject_kind, lease.dry_run) == ("tenant", False)
    assert lease.sealed_value is not None
    assert store.seal.open(lease.sealed_value) == "acme-1"
    task = task_of(store, job_id)
    assert (task.status, task.lease_id, task.attempts, task.celery_id) == (
        TaskStatus.RUNNING,
        lease.lease_id,
        1,
        "m-1",
    )
    assert outcomes_of(store, job_id) == ["running"]


def test_a_missing_or_finished_task_is_not_claimed(store: JobStore) -> None:
    job_id = new_job(store)
    set_task(store, job_id, status=TaskStatus.SUCCEEDED, total_rows=3)

    finished = _claim(store, job_id)
    missing = _claim(store, "no-such-job")

    assert isinstance(finished, NotClaimed)
    assert (finished.result.status, finished.result.total_rows) == ("succeeded", 3)
    assert isinstance(missing, NotClaimed)
    assert missing.result.status == "missing"
    assert outcomes_of(store, job_id) == []


def test_a_live_lease_is_left_to_its_execution(store: JobStore) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id)
    assert isinstance(first, Lease)

    second = _claim(store, job_id, celery_id="m-2")

    assert isinstance(second, NotClaimed)
    assert second.held_for is not None
    assert 0 <= second.held_for < STALE_AFTER
    assert task_of(store, job_id).lease_id == first.lease_id


def test_a_stale_lease_is_taken_over_keeping_the_dead_executions_counts(
    store: JobStore,
) -> None:
    job_id = new_job(store)
    first = _claim(store, job_id)
    assert isinstance(first, Lease)
    with store.transaction() as session:
        counts = {"orders:delete": 5, "customers:nullify": 2}
        assert heartbeat(session, first.task_id, first.lease_id, counts, 5)
    set_task(store, job_id, heartbeat_at=utcnow() - timedelta(seconds=STALE_AFTER + 1))

    second = _claim(store, job_id, celery_id="m-2")

    assert isinstance(second, Lease)
    task = task_of(store, job_id)
    assert (task.crashes, task.attempts, task.total_rows) == (1, 2, 5)
    assert {r["table"]: r["rows"] for r in task.rows} == {"orders": 5, "customers": 2}
    assert outcomes_of(store, job_id) == ["lost", "running"]


def test_its_own_redelivered_message_takes_over_a_fresh_lease(store: JobStore) -> None:
    job_id = new_job(store)
    assert isinstance(_claim(store, job_id), Lease)

    again = _claim(store, job_id, redelivered=True)

    assert isinstance(again, Lease)
    assert task_of(store, job_id).crashes == 1


def test_too_many_crashes_fail_the_task_as_a_poison_message(store: JobStore) -> None:
    job_id = new_job(store)
    assert isinstance(_claim(store, job_id), Lease)
    set_task(store, job_id, crashes=1)

    poisoned = _claim(store, job_id, redelivered=True)

    assert isinstance(poisoned, NotClaimed)
    assert poisoned.dead_letter_id is not None
    assert poisoned.last
    task = task_of(store, job_id)
    assert (task.status, task.lease_id, task.crashes) == (TaskStatus.FAILED, None, 2)
    with store.transaction() as session:
        letter = session.get(DeadLetter, poisoned.dead_letter_id)
        assert letter is not None
        assert letter.reason == "poison"


def test_a_heartbeat_fails_once_the_lease_is_taken_over(store: JobStore) -> None:
    job_id = new_job(store)
    lease = _claim(store, job_id)
    assert isinstance(lease, Lease)
    set_task(store, job_id, lease_id="another-execution")

    with store.transaction() as session:
        assert not heartbeat(session, lease.task_id, lease.lease_id, {}, 0)
        assert held_task(session, lease.task_id, lease.lease_id) is None
        assert held_task(session, lease.task_id, "another-execution") is not None
