"""``models.store.faults`` and ``models.store.dead_letters``: a retry scheduled and
audited, a task failed for good with its dead letter."""

from __future__ import annotations

import sqlalchemy as sa

from models.store.database import JobStore
from models.store.dead_letters import DeadLetterReason
from models.store.faults import fail_task, postpone, schedule_retry
from models.store.tables import AuditEvent, DeadLetter, Task, TaskStatus, utcnow
from tests.unit.store.new_job import audit_kinds, new_job, task_of


def _locked_task(session: sa.orm.Session, job_id: str) -> Task:
    task = session.scalar(sa.select(Task).where(Task.job_id == job_id))
    assert task is not None
    return task


def test_a_retry_is_counted_audited_and_due_later(store: JobStore) -> None:
    job_id = new_job(store)
    before = utcnow()

    with store.transaction() as session:
        schedule_retry(session, _locked_task(session, job_id), 30.0, "deadlock", "40P01")

    task = task_of(store, job_id)
    assert (task.status, task.retries, task.error, task.lease_id) == (
        TaskStatus.RETRYING,
        1,
        "deadlock",
        None,
    )
    assert task.retry_at is not None
    assert 29 <= (task.retry_at - before).total_seconds() <= 31
    with store.transaction() as session:
        detail = session.scalar(sa.select(AuditEvent.detail).where(AuditEvent.kind == "task.retry"))
    assert detail == {"service": "shop", "retry": 1, "code": "40P01", "in_seconds": 30.0}


def test_a_postponed_task_counts_no_retry(store: JobStore) -> None:
    job_id = new_job(store)

    with store.transaction() as session:
        postpone(_locked_task(session, job_id), 5.0, "the subject is locked")

    task = task_of(store, job_id)
    assert (task.status, task.retries) == (TaskStatus.RETRYING, 0)
    assert audit_kinds(store, job_id) == ["job.submitted"]


def test_a_failed_task_has_its_dead_letter(store: JobStore) -> None:
    job_id = new_job(store)

    with store.transaction() as session:
        letter_id = fail_task(
            session,
            _locked_task(session, job_id),
            DeadLetterReason.PERMANENT,
            "permission denied",
            "frames\nPermissionError",
        )

    task = task_of(store, job_id)
    assert (task.status, task.error) == (TaskStatus.FAILED, "permission denied")
    assert task.finished_at is not None
    with store.transaction() as session:
        letter = session.get(DeadLetter, letter_id)
        assert letter is not None
        assert (letter.job_id, letter.service, letter.reason, letter.traceback) == (
            job_id,
            "shop",
            "permanent",
            "frames\nPermissionError",
        )
    assert audit_kinds(store, job_id) == ["job.submitted", "task.dead_lettered"]
