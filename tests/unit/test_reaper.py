"""The reaper (``tasks.reaper`` over ``models.store.reaping``): the outbox, stale
leases, poison messages, lost messages (once per grace period, never while a backlog
waits), lost chords and deadlines, each read from the job store's rows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from models.registry import Registry
from models.store.database import JobStore
from models.store.tables import (
    JobStatus,
    TaskStatus,
    utcnow,
)
from tests.unit.job_world import (
    _dispatched,
    _events,
    _hold_lease,
    _job,
    _letters,
    _outcomes,
    _reap,
    _rows_by_table,
    _submit,
    _task,
    _update_job,
    _update_task,
)

pytestmark = pytest.mark.usefixtures("in_process_broker")


def test_reaper_dispatches_the_outbox(store: JobStore, registry: Registry) -> None:
    old = _submit(store, registry)
    fresh = _submit(store, registry, "billing")
    _update_job(store, old, created_at=utcnow() - timedelta(seconds=60))

    report = _reap(store, registry, dispatch_grace_seconds=10)

    assert report.ran
    assert report.dispatched == [old]
    job = _job(store, old)
    assert (job.status, job.dispatched_at is not None) == ("running", True)
    assert _task(store, old, "shop").queued_at is not None
    # Within the grace period the submitter may still be sending it.
    assert (_job(store, fresh).status, _job(store, fresh).dispatched_at) == ("pending", None)
    assert report.requeued == []  # just dispatched: not overdue
    # A second round finds nothing more to do.
    assert not _reap(store, registry, dispatch_grace_seconds=10).acted


def test_reaper_requeues_a_stale_lease(store: JobStore, registry: Registry) -> None:
    stale = _dispatched(store, registry)
    live = _dispatched(store, registry)
    _hold_lease(store, stale, "shop", age_seconds=60, tables={"main.orders:delete": 7})
    _hold_lease(store, live, "shop", age_seconds=1)

    report = _reap(store, registry, stale_after_seconds=15)

    assert report.requeued == [(stale, "shop")]
    assert report.dead_lettered == []
    task = _task(store, stale, "shop")
    assert (task.lease_id, task.crashes, task.status) == (None, 1, "running")
    assert task.queued_at is not None
    # What the dead execution's last heartbeat carried is kept.
    assert (task.total_rows, _rows_by_table(task)) == (7, {"main.orders": 7})
    assert _outcomes(store, stale, "shop") == ["lost"]
    [event] = _events(store, stale, "task.requeued")
    assert (event.actor, event.detail) == ("reaper", {"service": "shop", "why": "stale heartbeat"})
    # The live execution keeps its lease.
    task = _task(store, live, "shop")
    assert (task.lease_id, task.crashes) == ("lease-of-the-other-execution", 0)
    assert _outcomes(store, live, "shop") == ["running"]
    assert _events(store, live, "task.requeued") == []


def test_reaper_dead_letters_a_poison_message(store: JobStore, registry: Registry) -> None:
    job_id = _dispatched(store, registry)
    _hold_lease(store, job_id, "shop", age_seconds=60)
    _update_task(store, job_id, "shop", crashes=2)

    report = _reap(store, registry, stale_after_seconds=15, max_crashes=3)

    assert report.requeued == []
    assert report.dead_lettered == [(job_id, "shop")]
    assert report.finalized == [job_id]  # its only task ended
    task = _task(store, job_id, "shop")
    assert (task.status, task.crashes, task.lease_id) == ("failed", 3, None)
    [letter] = _letters(store, job_id)
    assert (letter.reason, letter.attempts) == ("poison", 1)
    assert _outcomes(store, job_id, "shop") == ["lost"]
    assert _job(store, job_id).status == "failed"


#: How a task waits for a message that never comes: its status and whether a retry
#: was due.
WAITING = [
    pytest.param(TaskStatus.PENDING, False, id="pending"),  # its first message never came
    pytest.param(TaskStatus.RETRYING, True, id="retrying"),  # its retry never came back
    pytest.param(TaskStatus.RUNNING, False, id="between-slices"),  # the next slice never came
]


def _lost_message(store: JobStore, registry: Registry, status: TaskStatus, retry: bool) -> str:
    job_id = _dispatched(store, registry)
    long_ago = utcnow() - timedelta(seconds=120)
    values: dict[str, Any] = {"status": status, "queued_at": long_ago}
    if retry:
        values["retry_at"] = long_ago + timedelta(seconds=1)
    _update_task(store, job_id, "shop", **values)
    return job_id


@pytest.mark.parametrize(("status", "retry"), WAITING)
def test_reaper_resends_a_lost_message(
    store: JobStore, registry: Registry, status: TaskStatus, retry: bool
) -> None:
    job_id = _lost_message(store, registry, status, retry)
    before = utcnow() - timedelta(seconds=1)

    report = _reap(store, registry, 0, dispatch_grace_seconds=10)

    assert report.requeued == [(job_id, "shop")]
    task = _task(store, job_id, "shop")
    assert task.status == status
    assert task.queued_at is not None
    assert task.queued_at.replace(tzinfo=None) > before.replace(tzinfo=None)
    [event] = _events(store, job_id, "task.requeued")
    assert (event.actor, event.detail) == ("reaper", {"service": "shop", "why": "message lost"})


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        WAITING[0],
        pytest.param(
            TaskStatus.RETRYING,
            True,
            id="retrying",
        ),
        WAITING[2],
    ],
)
def test_reaper_resends_a_lost_message_once_per_grace_period(
    store: JobStore, registry: Registry, status: TaskStatus, retry: bool
) -> None:
    job_id = _lost_message(store, registry, status, retry)
    assert _reap(store, registry, 0, dispatch_grace_seconds=10).requeued == [(job_id, "shop")]

    # The resent message is on its way (the queue looks empty once a worker took it).
    again = _reap(store, registry, 0, dispatch_grace_seconds=10)

    assert again.requeued == []
    assert len(_events(store, job_id, "task.requeued")) == 1


@pytest.mark.parametrize(
    "depth",
    [
        3,  # a backlog: the message is probably waiting in it
        None,  # the broker cannot say: do not guess
    ],
)
def test_reaper_leaves_a_backlog_alone(
    store: JobStore, registry: Registry, depth: int | None
) -> None:
    job_id = _dispatched(store, registry)
    long_ago = utcnow() - timedelta(seconds=120)
    _update_task(store, job_id, "shop", queued_at=long_ago)

    report = _reap(store, registry, depth, dispatch_grace_seconds=10)

    assert report.requeued == []
    task = _task(store, job_id, "shop")
    assert task.queued_at is not None
    assert task.queued_at.replace(tzinfo=None) == long_ago.replace(tzinfo=None)
    assert _events(store, job_id, "task.requeued") == []


def test_reaper_does_not_resend_a_message_within_the_grace_period(
    store: JobStore, registry: Registry
) -> None:
    job_id = _dispatched(store, registry)
    _update_task(store, job_id, "shop", queued_at=utcnow() - timedelta(seconds=5))
    assert _reap(store, registry, 0, dispatch_grace_seconds=10).requeued == []


def test_reaper_finalizes_a_job_whose_chord_was_lost(store: JobStore, registry: Registry) -> None:
    job_id = _dispatched(store, registry)
    _update_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED, total_rows=5)
    assert _job(store, job_id).status == "running"

    report = _reap(store, registry)

    assert report.finalized == [job_id]
    job = _job(store, job_id)
    assert (job.status, job.total_rows) == ("succeeded", 5)
    assert job.finished_at is not None
    assert len(_events(store, job_id, "job.finished")) == 1


# On PostgreSQL too: the round runs under the reaper's advisory lock there.
def test_reaper_fails_what_is_left_past_the_deadline(store: JobStore, registry: Registry) -> None:
    job_id = _dispatched(store, registry, "shop", "billing")
    _update_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED, total_rows=40)
    _hold_lease(store, job_id, "billing", age_seconds=1)  # still running, heartbeat fresh
    _update_job(store, job_id, deadline_at=utcnow() - timedelta(seconds=1))

    report = _reap(store, registry)

    assert report.expired == [job_id]
    assert report.dead_lettered == [(job_id, "billing")]
    assert report.requeued == []
    billing = _task(store, job_id, "billing")
    assert (billing.status, billing.lease_id) == ("failed", None)
    assert billing.error == "the job's deadline passed before this task finished"
    assert billing.finished_at is not None
    assert _outcomes(store, job_id, "billing") == ["lost"]
    assert _task(store, job_id, "shop").status == "succeeded"
    [letter] = _letters(store, job_id)
    assert (letter.reason, letter.service) == ("deadline", "billing")
    job = _job(store, job_id)
    assert (job.status, job.total_rows) == (JobStatus.PARTIALLY_FAILED, 40)
    assert job.finished_at is not None
    # A terminal job is left alone by later rounds.
    assert not _reap(store, registry).acted
