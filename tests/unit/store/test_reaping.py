"""``models.store.reaping``: what the reaper finds in the job store (undispatched
jobs, stale leases, overdue messages, lost chords, passed deadlines) and marks."""

from __future__ import annotations

from datetime import timedelta

from models.erasure import TableAction
from models.store.database import JobStore
from models.store.reaping import (
    expired_jobs,
    fail_unfinished,
    idle_task,
    jobs_to_finalize,
    overdue_tasks,
    reaper_lock,
    requeue,
    stale_leases,
    undispatched_jobs,
)
from models.store.tables import TaskStatus, utcnow
from tests.unit.store.new_job import audit_kinds, new_job, set_task, task_of

LONG_AGO = timedelta(minutes=10)


def test_undispatched_jobs_are_found_after_their_grace(store: JobStore) -> None:
    waiting = new_job(store)
    new_job(store, dispatched=True)

    with store.transaction() as session:
        assert undispatched_jobs(session, utcnow() + timedelta(seconds=1)) == [waiting]
        assert undispatched_jobs(session, utcnow() - LONG_AGO) == []


def test_stale_leases_are_the_held_tasks_that_stopped_beating(store: JobStore) -> None:
    stale = new_job(store, dispatched=True)
    live = new_job(store, dispatched=True)
    now = utcnow()
    set_task(store, stale, status=TaskStatus.RUNNING, lease_id="l-1", heartbeat_at=now - LONG_AGO)
    set_task(store, live, status=TaskStatus.RUNNING, lease_id="l-2", heartbeat_at=now)

    with store.transaction() as session:
        found = stale_leases(session, now - timedelta(seconds=30))
        assert [t.job_id for t in found] == [stale]


def test_overdue_messages_are_requeued_once(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing", dispatched=True)
    now = utcnow()
    set_task(store, job_id, "shop", queued_at=now - LONG_AGO)
    set_task(
        store, job_id, "billing", status=TaskStatus.RETRYING, queued_at=now, retry_at=now - LONG_AGO
    )

    with store.transaction() as session:
        assert sorted(overdue_tasks(session, now - timedelta(seconds=30))) == [
            (job_id, "billing"),
            (job_id, "shop"),
        ]
    with store.transaction() as session:
        for service in ("shop", "billing"):
            task = idle_task(session, job_id, service)
            assert task is not None
            requeue(session, task, now, "message lost")
    with store.transaction() as session:
        assert overdue_tasks(session, now - timedelta(seconds=30)) == []

    assert task_of(store, job_id, "billing").retry_at == now
    assert audit_kinds(store, job_id).count("task.requeued") == 2


def test_a_finished_or_held_task_is_not_idle(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing", dispatched=True)
    set_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED)
    set_task(store, job_id, "billing", lease_id="l-1")

    with store.transaction() as session:
        assert idle_task(session, job_id, "shop") is None
        assert idle_task(session, job_id, "billing") is None


def test_lost_chords_are_open_jobs_whose_tasks_all_ended(store: JobStore) -> None:
    ended = new_job(store, dispatched=True)
    new_job(store, dispatched=True)  # its task is still pending
    new_job(store)  # not dispatched: the outbox's
    set_task(store, ended, status=TaskStatus.SUCCEEDED)

    with store.transaction() as session:
        assert jobs_to_finalize(session) == [ended]


def test_past_the_deadline_the_unfinished_tasks_fail(store: JobStore) -> None:
    job_id = new_job(store, "shop", "billing", dispatched=True)
    now = utcnow()
    set_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED)
    set_task(store, job_id, "billing", status=TaskStatus.RUNNING, lease_id="l-1")

    with store.transaction() as session:
        [job] = expired_jobs(session, now + timedelta(days=1))
        failed = fail_unfinished(session, job, now, {TableAction.DELETE})
        assert [(t.service, letter > 0) for t, letter in failed] == [("billing", True)]
    with store.transaction() as session:
        assert expired_jobs(session, now) == []

    billing = task_of(store, job_id, "billing")
    assert (billing.status, billing.crashes, billing.lease_id) == (TaskStatus.FAILED, 1, None)
    assert task_of(store, job_id, "shop").status == TaskStatus.SUCCEEDED


def test_sqlite_has_one_reaper(store: JobStore) -> None:
    with reaper_lock(store) as held:
        assert held
