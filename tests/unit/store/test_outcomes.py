"""``models.store.outcomes`` and ``models.store.nothing_found``: an execution's end
recorded on its task and attempt, and whether it ended the job's last open task."""

from __future__ import annotations

from models.erasure import TableAction, TableOutcome
from models.store.database import JobStore
from models.store.leases import Lease, claim_task
from models.store.nothing_found import NothingFound, record_nothing_found
from models.store.outcomes import others_open, record_slice, record_success
from models.store.tables import Task, TaskStatus, utcnow
from tests.unit.store.new_job import new_job, outcomes_of, set_task, task_of
from worker.prepared import Prepared

TABLES = [TableOutcome(table="orders", action=TableAction.DELETE, rows=3)]


def _lease(store: JobStore, job_id: str, service: str = "shop") -> Lease:
    with store.transaction() as session:
        lease = claim_task(
            session,
            job_id,
            service,
            celery_id=None,
            redelivered=False,
            worker=None,
            stale_after_seconds=30,
            max_crashes=3,
            removing={TableAction.DELETE},
        )
    assert isinstance(lease, Lease)
    return lease


def test_a_slice_then_a_success_add_up_on_the_task(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing")
    first = _lease(store, job_id)
    with store.transaction() as session:
        task = session.get_one(Task, first.task_id)
        assert record_slice(session, task, first.lease_id, TABLES, 3) == 3
        assert task.lease_id is None
    second = _lease(store, job_id)

    with store.transaction() as session:
        task = session.get_one(Task, second.task_id)
        record_success(
            session, task, second.lease_id, TABLES, removed=3, verified=True, fingerprint="fp"
        )
        assert others_open(session, task) == 1  # billing

    shop = task_of(store, job_id)
    assert (shop.status, shop.total_rows, shop.verified, shop.plan_fingerprint) == (
        TaskStatus.SUCCEEDED,
        6,
        True,
        "fp",
    )
    assert shop.rows == [{"table": "orders", "action": "delete", "rows": 6}]
    assert outcomes_of(store, job_id) == ["sliced", "succeeded"]


def _nothing(job_id: str, service: str) -> NothingFound:
    now = utcnow()
    return NothingFound(job_id, service, [], True, "fp", "m-1", "w-1", now, now)


def test_nothing_found_is_recorded_at_once_unless_the_task_moved(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing")
    set_task(store, job_id, "billing", lease_id="held")

    assert record_nothing_found(store, _nothing(job_id, "billing"), Prepared) is None
    assert record_nothing_found(store, _nothing(job_id, "shop"), Prepared) is False
    set_task(store, job_id, "billing", lease_id=None, status=TaskStatus.SUCCEEDED)

    shop = task_of(store, job_id)
    assert (shop.status, shop.attempts, shop.total_rows) == (TaskStatus.SUCCEEDED, 1, 0)
    assert outcomes_of(store, job_id) == ["succeeded"]
    assert outcomes_of(store, job_id, "billing") == []
    other = new_job(store, "shop")
    assert record_nothing_found(store, _nothing(other, "shop"), Prepared) is True
