"""``models.store.submission``: a job, its tasks and its audit event in the caller's
transaction; the job an idempotency key names."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from models.messages import ErasureRequest
from models.store.database import JobStore
from models.store.exceptions import IdempotencyConflict
from models.store.submission import job_for_key, same_request
from models.store.tables import JobStatus, TaskStatus
from tests.unit.store.new_job import audit_kinds, job_of, new_job, task_of


def test_a_job_is_created_with_one_pending_task_per_service(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing")

    job = job_of(store, job_id)
    assert (job.status, job.dispatched_at, job.services) == (
        JobStatus.PENDING,
        None,
        ["billing", "shop"],
    )
    for service in ("billing", "shop"):
        task = task_of(store, job_id, service)
        assert (task.status, task.queued_at, task.attempts) == (TaskStatus.PENDING, None, 0)
    assert audit_kinds(store, job_id) == ["job.submitted"]


def test_a_job_dispatched_at_creation_is_running_with_its_tasks_queued(store: JobStore) -> None:
    job_id = new_job(store, "shop", dispatched=True)

    job, task = job_of(store, job_id), task_of(store, job_id)
    assert job.status == JobStatus.RUNNING
    assert job.dispatched_at is not None
    assert task.queued_at == job.dispatched_at


def test_an_idempotency_key_names_its_first_job_and_is_unique(store: JobStore) -> None:
    job_id = new_job(store, key="k-1")

    with store.transaction() as session:
        found = job_for_key(session, "k-1")
        assert found is not None
        assert found.id == job_id
        assert job_for_key(session, "k-2") is None
    with pytest.raises(sa.exc.IntegrityError):
        new_job(store, key="k-1")


def test_a_reused_key_with_another_request_is_a_conflict(store: JobStore) -> None:
    job_id = new_job(store, key="k-1")
    same = ErasureRequest(
        subject_kind="tenant", subject_value="acme-1", services=["shop"], idempotency_key="k-1"
    )
    other = same.model_copy(update={"subject_value": "acme-2"})

    with store.transaction() as session:
        job = job_for_key(session, "k-1")
        assert job is not None
        assert same_request(job, store.seal.request_hash(same)).id == job_id
        with pytest.raises(IdempotencyConflict) as refused:
            same_request(job, store.seal.request_hash(other))
    assert refused.value.job_id == job_id


def test_an_idempotency_key_is_scoped_to_its_owner(store: JobStore) -> None:
    mine = new_job(store, key="k-1", owner="key0001a")
    theirs = new_job(store, key="k-1", owner="key0002b")  # no IntegrityError: two jobs
    cli = new_job(store, key="k-1")

    assert len({mine, theirs, cli}) == 3
    with store.transaction() as session:
        assert [
            getattr(job_for_key(session, "k-1", owner), "id", None)
            for owner in ("key0001a", "key0002b", None, "key0003c")
        ] == [mine, theirs, cli, None]
    with pytest.raises(sa.exc.IntegrityError):
        new_job(store, key="k-1", owner="key0001a")
    with pytest.raises(sa.exc.IntegrityError):
        new_job(store, key="k-1")  # no owner is an owner too: the key stays unique


def test_the_value_is_stored_sealed_and_hashed_under_the_pepper(store: JobStore) -> None:
    job_id = new_job(store)

    job = job_of(store, job_id)
    assert job.subject_value is not None
    assert "acme-1" not in job.subject_value
    assert store.seal.open(job.subject_value) == "acme-1"
    assert job.subject_hash == store.seal.subject_hash("tenant", "acme-1")
    assert len(job.request_hash) == 64
