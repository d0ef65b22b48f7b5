"""``models.store.retries`` and ``models.store.cancellation``: failed tasks reset to
run again with their dead letters marked replayed; waiting tasks cancelled; every
refusal says why."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from models.store.cancellation import cancel_waiting_tasks
from models.store.database import JobStore
from models.store.dead_letters import DeadLetterReason
from models.store.exceptions import RetryRefused
from models.store.faults import fail_task
from models.store.retries import replayable_letter, requeue_failed_tasks
from models.store.tables import DeadLetter, JobStatus, Task, TaskStatus, utcnow
from tests.unit.store.new_job import audit_kinds, job_of, new_job, set_task, task_of


def _failed(store: JobStore, job_id: str, service: str) -> int:
    with store.transaction() as session:
        task = session.scalar(sa.select(Task).where(Task.job_id == job_id, Task.service == service))
        assert task is not None
        return fail_task(session, task, DeadLetterReason.PERMANENT, "no table", None)


def _requeue(store: JobStore, job_id: str, *services: str) -> list[str]:
    with store.transaction() as session:
        return requeue_failed_tasks(
            session,
            job_id,
            services=services,
            dead_letter_ids=(),
            actor="ops",
            deadline_at=utcnow() + timedelta(hours=2),
        ).services


def test_only_the_failed_tasks_are_reset_and_their_letters_replayed(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing", dispatched=True)
    set_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED, total_rows=4)
    letter = _failed(store, job_id, "billing")
    set_task(store, job_id, "billing", retries=3, crashes=1)

    assert _requeue(store, job_id) == ["billing"]

    billing = task_of(store, job_id, "billing")
    assert (billing.status, billing.retries, billing.crashes, billing.error) == (
        TaskStatus.PENDING,
        0,
        0,
        None,
    )
    assert task_of(store, job_id, "shop").status == TaskStatus.SUCCEEDED
    assert job_of(store, job_id).status == JobStatus.RUNNING
    with store.transaction() as session:
        replayed = session.get(DeadLetter, letter)
        assert replayed is not None
        assert replayed.replayed_by == "ops"
        with pytest.raises(RetryRefused, match="was replayed at"):
            replayable_letter(session, letter)
    assert audit_kinds(store, job_id)[-1] == "job.retried"


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ((), "has no failed task to retry"),  # nothing failed
        (("billing",), "has no failed task for service 'billing'"),  # not a failed one
    ],
)
def test_a_retry_with_nothing_to_run_is_refused(
    store: JobStore, services: tuple[str, ...], message: str
) -> None:
    job_id = new_job(store, "shop", "billing", dispatched=True)

    with pytest.raises(RetryRefused, match=message):
        _requeue(store, job_id, *services)
    with pytest.raises(RetryRefused, match="no job nope"):
        _requeue(store, "nope")
    with store.transaction() as session, pytest.raises(RetryRefused, match="no dead letter 99"):
        replayable_letter(session, 99)


def test_a_dead_letter_names_its_job_and_service(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing")
    letter = _failed(store, job_id, "billing")

    with store.transaction() as session:
        assert replayable_letter(session, letter) == (job_id, "billing")


def test_only_the_tasks_no_execution_started_are_cancelled(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing", "legacy", dispatched=True)
    set_task(store, job_id, "shop", status=TaskStatus.RUNNING, attempts=1)
    set_task(store, job_id, "legacy", attempts=1)  # pending again after a slice

    with store.transaction() as session:
        assert cancel_waiting_tasks(session, job_id, "ops") == ["billing"]
    with store.transaction() as session, pytest.raises(RetryRefused, match="no task left"):
        cancel_waiting_tasks(session, job_id, "ops")
    with store.transaction() as session, pytest.raises(RetryRefused, match="no job nope"):
        cancel_waiting_tasks(session, "nope", "ops")

    assert task_of(store, job_id, "billing").status == TaskStatus.CANCELLED
    assert task_of(store, job_id, "shop").status == TaskStatus.RUNNING
    assert task_of(store, job_id, "legacy").status == TaskStatus.PENDING
    assert audit_kinds(store, job_id)[-1] == "job.cancelled"
