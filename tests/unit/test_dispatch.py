"""Dispatch (``tasks.submit`` over ``models.store.dispatch``): ``submit_and_dispatch``
stamps the job in the creating transaction and takes the stamp back when the broker
refuses the chord, so the reaper sends it; ``not_watching_results`` is undone on exit
and local to its thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from kombu.exceptions import OperationalError

import tasks.submit
from models.messages import ErasureRequest
from models.registry import Registry
from models.store.database import JobStore
from models.store.tables import Job, Task, utcnow
from tasks.reaper import reap
from tasks.submit import (
    dispatch,
    not_watching_results,
    request_dispatch,
    submit_and_dispatch,
)
from tests.unit import shop_world
from tests.unit.job_world import (
    QUEUE,
    SUBJECT,
    _job,
    _settings,
    _task,
    _update_job,
    _update_task,
)
from tests.unit.shop_world import (
    _purge,
    _submit,
)
from worker.app import app

pytestmark = pytest.mark.usefixtures("broker_emptied")

#: This world's targets: twenty customers in shop, half of them the subject's.
targets = shop_world.targets
#: This world's broker, emptied before and after each test.
broker_emptied = shop_world.broker_emptied


@dataclass
class Sent:
    """``send_chord_for`` standing in for the broker: records each chord, and what the
    job store held (committed) when it was sent."""

    store: JobStore
    fail: bool = False
    chords: list[tuple[str, list[str], str]] = field(default_factory=list)
    #: (job status, job stamped, each task stamped) as another connection saw them.
    seen: list[tuple[str, bool, list[bool]]] = field(default_factory=list)

    def __call__(self, _registry: Registry, job_id: str, services: list[str], queue: str) -> None:
        if self.fail:
            raise OperationalError("the broker refused the connection")
        with self.store.engine.connect() as conn:
            status, dispatched = conn.execute(
                sa.select(Job.status, Job.dispatched_at).where(Job.id == job_id)
            ).one()
            queued = conn.scalars(
                sa.select(Task.queued_at).where(Task.job_id == job_id).order_by(Task.service)
            )
            self.seen.append((status, dispatched is not None, [q is not None for q in queued]))
        self.chords.append((job_id, list(services), queue))


def _request(**fields: Any) -> ErasureRequest:
    return ErasureRequest(subject_kind="tenant", subject_value=SUBJECT, **fields)


def test_submit_and_dispatch_stamps_the_job_before_the_chord_leaves(
    store: JobStore, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = Sent(store)
    monkeypatch.setattr(tasks.submit, "send_chord_for", sent)

    job, created = submit_and_dispatch(store, registry, _request(idempotency_key="k-1"), 60, QUEUE)

    assert created
    assert sent.chords == [(job.id, ["billing", "legacy", "shop"], QUEUE)]
    assert sent.seen == [("running", True, [True, True, True])]
    stored = _job(store, job.id)
    assert (stored.status, stored.dispatched_at is not None) == ("running", True)
    assert all(_task(store, job.id, s).queued_at is not None for s in stored.services)
    # The same request again: the first job, and no second chord.
    again, created = submit_and_dispatch(
        store, registry, _request(idempotency_key="k-1"), 60, QUEUE
    )
    assert (again.id, created) == (job.id, False)
    assert sent.chords == [(job.id, ["billing", "legacy", "shop"], QUEUE)]


def test_a_chord_the_broker_refuses_is_left_to_the_reaper(
    store: JobStore,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(tasks.submit, "send_chord_for", Sent(store, fail=True))

    job, created = submit_and_dispatch(store, registry, _request(services=["shop"]), 60, QUEUE)

    assert created
    stored = _job(store, job.id)
    assert (stored.status, stored.dispatched_at) == ("pending", None)
    assert f"job {job.id} not dispatched now" in caplog.text
    # The broker is back; the reaper's outbox sends the job once its grace period passed.
    sent = Sent(store)
    monkeypatch.setattr(tasks.submit, "send_chord_for", sent)
    _update_job(store, job.id, created_at=utcnow() - timedelta(seconds=60))

    report = reap(store, registry, _settings(dispatch_grace_seconds=10), queue_depth=lambda _q: 0)

    assert report.dispatched == [job.id]
    assert sent.chords == [(job.id, ["shop"], QUEUE)]
    stored = _job(store, job.id)
    assert (stored.status, stored.dispatched_at is not None) == ("running", True)


class _SubmitterDied(BaseException):
    """Stands for the submitting process being killed between its commit and the send."""


def test_tasks_a_dead_submitter_never_sent_are_sent_by_the_reaper(
    store: JobStore, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die(*_args: Any) -> None:
        raise _SubmitterDied

    monkeypatch.setattr(tasks.submit, "send_chord_for", die)
    with pytest.raises(_SubmitterDied):
        submit_and_dispatch(store, registry, _request(services=["shop", "billing"]), 60, QUEUE)
    with store.transaction() as session:
        [job_id] = session.scalars(sa.select(Job.id)).all()
    assert _job(store, job_id).dispatched_at is not None  # the stamp committed with the job
    settings = _settings(dispatch_grace_seconds=10)

    # Within the grace period the message may still be on its way.
    assert not reap(store, registry, settings, queue_depth=lambda _q: 0).acted
    for service in ("shop", "billing"):
        _update_task(store, job_id, service, queued_at=utcnow() - timedelta(seconds=60))
    report = reap(store, registry, settings, queue_depth=lambda _q: 0)

    assert report.dispatched == []
    assert sorted(report.requeued) == [(job_id, "billing"), (job_id, "shop")]
    assert _purge()[QUEUE] == 2  # one message per task, outside any chord


def test_dispatch_commits_its_stamp_before_sending_and_takes_it_back_on_failure(
    store: JobStore, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = _submit(store, registry, "shop", "billing", subject=SUBJECT)
    monkeypatch.setattr(tasks.submit, "send_chord_for", Sent(store, fail=True))

    with pytest.raises(OperationalError):
        dispatch(store, registry, refused, QUEUE)
    assert request_dispatch(store, registry, refused, QUEUE) is False  # logged, not raised

    stored = _job(store, refused)
    assert (stored.status, stored.dispatched_at) == ("pending", None)

    sent = Sent(store)
    monkeypatch.setattr(tasks.submit, "send_chord_for", sent)
    assert dispatch(store, registry, refused, QUEUE)

    assert sent.seen == [("running", True, [True, True])]
    assert sent.chords == [(refused, ["billing", "shop"], QUEUE)]
    assert not dispatch(store, registry, refused, QUEUE)  # a repeated dispatch message
    assert len(sent.chords) == 1


@pytest.fixture
def watched() -> Iterator[list[str]]:
    """The task ids this thread's result backend is asked to watch (an instance
    attribute of its own, removed afterwards: the class's method stays untouched)."""
    backend = app.backend
    assert "on_task_call" not in vars(backend)
    ids: list[str] = []

    def watch(_producer: object, task_id: str) -> dict[str, Any]:
        ids.append(task_id)
        return {}

    backend.on_task_call = watch
    yield ids
    del backend.on_task_call


def _sends_watched(watched: list[str]) -> int:
    """Send a message; returns how many task ids the backend was asked to watch."""
    before = len(watched)
    app.send_task("eraser.test_only", queue=QUEUE)
    return len(watched) - before


def test_submit_and_dispatch_puts_the_chord_on_the_broker_without_watching_results(
    store: JobStore, registry: Registry, watched: list[str]
) -> None:
    job, _ = submit_and_dispatch(store, registry, _request(services=["shop", "billing"]), 60, QUEUE)

    assert watched == []
    assert _purge()[QUEUE] == 2  # one message per service; the body waits in the backend
    assert _job(store, job.id).status == "running"
    assert _sends_watched(watched) == 1  # watching again after the send


def _failing_send(watched: list[str]) -> None:
    """Inside the block: a send that is not watched, then the broker fails."""
    with not_watching_results():
        assert _sends_watched(watched) == 0
        raise OperationalError("the broker went away mid-send")


def test_not_watching_results_is_undone_when_the_block_ends(watched: list[str]) -> None:
    assert _sends_watched(watched) == 1

    with not_watching_results():
        assert _sends_watched(watched) == 0
    assert _sends_watched(watched) == 1

    with pytest.raises(OperationalError):
        _failing_send(watched)
    assert _sends_watched(watched) == 1


def _failing_block() -> None:
    with not_watching_results():
        assert app.backend.on_task_call(None, "some-task-id") == {}
        raise RuntimeError("boom")


def test_not_watching_results_leaves_the_class_method_in_place() -> None:
    backend = app.backend
    assert "on_task_call" not in vars(backend)

    with pytest.raises(RuntimeError, match="boom"):
        _failing_block()

    assert "on_task_call" not in vars(backend)  # the class's method again, not a copy
    assert backend.on_task_call.__func__ is type(backend).on_task_call


def test_not_watching_results_is_local_to_the_thread(watched: list[str]) -> None:
    elsewhere: list[int] = []

    def send_from_another_thread() -> None:
        backend = app.backend  # this thread's own
        ids: list[str] = []

        def watch(_producer: object, task_id: str) -> dict[str, Any]:
            ids.append(task_id)
            return {}

        backend.on_task_call = watch
        try:
            app.send_task("eraser.test_only", queue=QUEUE)
        finally:
            del backend.on_task_call
        elsewhere.append(len(ids))

    with not_watching_results():
        thread = threading.Thread(target=send_from_another_thread)
        thread.start()
        thread.join()
        assert _sends_watched(watched) == 0

    assert elsewhere == [1]
