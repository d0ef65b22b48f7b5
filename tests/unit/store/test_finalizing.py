"""``models.store.finalizing``: a job's status and totals recomputed from its task
rows, the ``job.finished`` audit event written once."""

from __future__ import annotations

from models.store.database import JobStore
from models.store.finalizing import finalize_job_row, finished_job, ready_to_finalize
from models.store.tables import JobStatus, TaskStatus
from tests.unit.store.new_job import audit_kinds, job_of, new_job, set_task


def test_a_job_whose_tasks_ended_is_final_with_their_totals_once(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing", dispatched=True)
    set_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED, total_rows=7, verified=True)
    set_task(store, job_id, "billing", status=TaskStatus.FAILED, total_rows=2)

    with store.transaction() as session:
        assert ready_to_finalize(session, job_id)
        done = finalize_job_row(session, job_id)
    with store.transaction() as session:
        again = finalize_job_row(session, job_id)
        assert not ready_to_finalize(session, job_id)

    assert done is not None
    assert (done.status, done.total_rows, done.announce) == (JobStatus.PARTIALLY_FAILED, 9, True)
    assert done.tasks == [("billing", "failed", 2, False), ("shop", "succeeded", 7, True)]
    assert again is not None
    assert not again.announce
    assert again.finished_at == done.finished_at
    job = job_of(store, job_id)
    assert (job.status, job.total_rows) == (JobStatus.PARTIALLY_FAILED, 9)
    assert audit_kinds(store, job_id) == ["job.submitted", "job.finished"]


def test_a_dispatched_job_with_open_tasks_stays_running(store: JobStore) -> None:
    job_id = new_job(store, dispatched=True)

    with store.transaction() as session:
        assert not ready_to_finalize(session, job_id)
        done = finalize_job_row(session, job_id)
        assert finalize_job_row(session, "no-such-job") is None

    assert done is not None
    assert (done.status, done.announce, done.finished_at) == (JobStatus.RUNNING, False, None)
    assert job_of(store, job_id).status == JobStatus.RUNNING


def test_the_completion_event_reads_the_job_and_its_tasks(store: JobStore) -> None:
    job_id = new_job(store, "shop")
    set_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED, total_rows=3, verified=True)

    with store.transaction() as session:
        found = finished_job(session, job_id)
        assert finished_job(session, "no-such-job") is None

    assert found is not None
    job, tasks = found
    assert job.id == job_id
    assert tasks == [("shop", "succeeded", 3, True)]
