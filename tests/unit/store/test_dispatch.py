"""``models.store.dispatch``: a job is stamped dispatched once, and the stamp is taken
back when the broker refused its chord."""

from __future__ import annotations

from models.store.database import JobStore
from models.store.dispatch import stamp_dispatch, take_back_dispatch
from models.store.tables import JobStatus, TaskStatus
from tests.unit.store.new_job import job_of, new_job, set_task, task_of


def test_the_stamp_covers_the_pending_tasks_once(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing")
    set_task(store, job_id, "billing", status=TaskStatus.CANCELLED)

    with store.transaction() as session:
        assert stamp_dispatch(session, job_id) == ["shop"]
    with store.transaction() as session:
        assert stamp_dispatch(session, job_id) is None  # a repeated dispatch
        assert stamp_dispatch(session, "no-such-job") is None

    job = job_of(store, job_id)
    assert job.status == JobStatus.RUNNING
    assert task_of(store, job_id, "shop").queued_at == job.dispatched_at
    assert task_of(store, job_id, "billing").queued_at is None


def test_a_stamp_taken_back_leaves_the_job_to_the_outbox(store: JobStore) -> None:
    job_id = new_job(store)
    with store.transaction() as session:
        stamp_dispatch(session, job_id)

    with store.transaction() as session:
        take_back_dispatch(session, job_id)

    job = job_of(store, job_id)
    assert (job.status, job.dispatched_at) == (JobStatus.PENDING, None)
    with store.transaction() as session:
        assert stamp_dispatch(session, job_id) == ["shop"]
