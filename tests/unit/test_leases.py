"""Leases (``tasks.claims``, ``tasks.heartbeat``, ``models.store.leases``): a live lease
makes another execution wait, a stale one is taken over with the crash counted and its
counts kept, a redelivered message takes over its own lease, and a message whose worker
keeps dying is dead-lettered as a poison message.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from models.registry import Registry
from models.store.database import JobStore
from tasks.erase import execute_task
from tasks.execution import Delivery
from tasks.finalize import finalize_if_done
from tests.unit.job_world import (
    OTHER,
    SUBJECT,
    Targets,
    _attempts,
    _hold_lease,
    _invoices,
    _letters,
    _make_billing,
    _outcomes,
    _rows_by_table,
    _run,
    _settings,
    _submit,
    _task,
    _tenant_rows,
    _update_task,
)

pytestmark = pytest.mark.usefixtures("in_process_broker")


def test_an_execution_whose_lease_is_taken_over_stops_at_the_next_batch(
    store: JobStore, registry: Registry, targets: Targets, tmp_path: Path
) -> None:
    targets.engines["billing"] = billing = _make_billing(tmp_path / "big.db", invoices=5000)
    job_id = _submit(store, registry, "billing")

    def take_over(_rows: int) -> None:
        # Called after the first batch: another execution takes the task over, and the
        # heartbeat thread (every 0.2 s at least) finds its lease gone.
        _update_task(store, job_id, "billing", lease_id="the-new-holder")
        time.sleep(0.7)

    outcome = execute_task(
        store,
        registry,
        _settings(heartbeat_seconds=0.05),
        job_id,
        "billing",
        engine_for=targets,
        report_state=take_over,
    )

    assert outcome.superseded
    assert (outcome.finished, outcome.again_in, outcome.dead_letter_id) == (False, None, None)
    assert _invoices(billing) == {SUBJECT: 2400, OTHER: 2500}  # two batches, then stopped
    task = _task(store, job_id, "billing")
    assert (task.lease_id, task.status) == ("the-new-holder", "running")
    assert _letters(store, job_id) == []


class _WorkerDied(BaseException):
    """Stands for the worker process being killed mid-execution: nothing is recorded."""


def test_rows_removed_before_a_crash_are_counted(
    store: JobStore, registry: Registry, targets: Targets, tmp_path: Path
) -> None:
    targets.engines["billing"] = billing = _make_billing(tmp_path / "big.db", invoices=5000)
    job_id = _submit(store, registry, "billing")

    def die(_rows: int) -> None:
        time.sleep(0.7)  # a few heartbeats (every 0.2 s at least) after the first batch
        raise _WorkerDied

    with pytest.raises(_WorkerDied):
        execute_task(
            store,
            registry,
            _settings(heartbeat_seconds=0.05),
            job_id,
            "billing",
            Delivery(celery_id="c-1"),
            engine_for=targets,
            report_state=die,
        )
    assert _invoices(billing) == {SUBJECT: 2450, OTHER: 2500}
    # The broker redelivers the message of the lost worker.
    outcome = _run(store, registry, _settings(), job_id, "billing", targets, Delivery("c-1", True))

    assert outcome.result.status == "succeeded"
    assert _invoices(billing) == {OTHER: 2500}
    task = _task(store, job_id, "billing")
    assert task.crashes == 1
    lost, done = _attempts(store, job_id, "billing")
    assert (lost.outcome, lost.rows, lost.tables) == ("lost", 50, {"main.invoices:delete": 50})
    assert (done.outcome, done.rows) == ("succeeded", 2450)
    # The dead execution's rows, kept by its heartbeat, count with the new one's.
    assert task.total_rows == 2500
    assert _rows_by_table(task) == {"main.invoices": 2500}


def test_a_live_lease_makes_the_execution_wait(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    _hold_lease(store, job_id, "shop", age_seconds=1)
    settings = _settings(stale_after_seconds=15)

    outcome = _run(store, registry, settings, job_id, "shop", targets, Delivery("c-new"))

    assert outcome.again_in is not None
    assert 0 < outcome.again_in <= 15
    assert not outcome.finished
    task = _task(store, job_id, "shop")
    assert (task.attempts, task.crashes, task.status) == (1, 0, "running")
    assert task.lease_id == "lease-of-the-other-execution"
    assert _outcomes(store, job_id, "shop") == ["running"]
    assert _tenant_rows(targets.engines["shop"])["customers"] == {SUBJECT: 10, OTHER: 10}


def test_a_stale_lease_is_taken_over(store: JobStore, registry: Registry, targets: Targets) -> None:
    job_id = _submit(store, registry)
    _hold_lease(store, job_id, "shop", age_seconds=60)

    outcome = _run(
        store, registry, _settings(stale_after_seconds=15), job_id, "shop", targets, Delivery("c2")
    )

    assert outcome.finished
    assert outcome.result.status == "succeeded"
    task = _task(store, job_id, "shop")
    assert (task.status, task.crashes, task.attempts, task.lease_id) == ("succeeded", 1, 2, None)
    old, new = _attempts(store, job_id, "shop")
    assert (old.outcome, old.lease_id) == ("lost", "lease-of-the-other-execution")
    assert old.finished_at is not None
    assert (new.outcome, new.number, new.celery_id) == ("succeeded", 2, "c2")
    assert _tenant_rows(targets.engines["shop"])["customers"] == {OTHER: 10}


@pytest.mark.parametrize(
    ("delivery", "takes_over"),
    [
        # the broker redelivers this task's own message: its worker was lost
        (Delivery(celery_id="c-old", redelivered=True), True),
        # a redelivery of some other message (a duplicate): the holder is alive
        (Delivery(celery_id="c-other", redelivered=True), False),
        # the same message id, not redelivered (a retry sent by the holder itself)
        (Delivery(celery_id="c-old", redelivered=False), False),
    ],
)
def test_own_redelivery_takes_over_a_fresh_lease(
    store: JobStore, registry: Registry, targets: Targets, delivery: Delivery, takes_over: bool
) -> None:
    job_id = _submit(store, registry)
    _hold_lease(store, job_id, "shop", age_seconds=0.5, celery_id="c-old")

    outcome = _run(store, registry, _settings(), job_id, "shop", targets, delivery)

    task = _task(store, job_id, "shop")
    if takes_over:
        assert outcome.finished
        assert (task.status, task.crashes) == ("succeeded", 1)
        assert _outcomes(store, job_id, "shop") == ["lost", "succeeded"]
    else:
        assert outcome.again_in is not None
        assert (task.status, task.crashes) == ("running", 0)
        assert _outcomes(store, job_id, "shop") == ["running"]


def test_a_poison_message_is_dead_lettered(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    settings = _settings(max_crashes=2, stale_after_seconds=15)
    # One crash counted already; the execution that took over died too.
    _hold_lease(store, job_id, "shop", age_seconds=60)
    _update_task(store, job_id, "shop", crashes=1)

    outcome = _run(store, registry, settings, job_id, "shop", targets, Delivery("c-3"))

    assert outcome.finished
    assert outcome.dead_letter_id is not None
    assert outcome.result.status == "failed"
    task = _task(store, job_id, "shop")
    assert (task.status, task.crashes, task.lease_id) == ("failed", 2, None)
    assert task.error is not None
    assert "poison" in task.error
    [letter] = _letters(store, job_id)
    assert (letter.id, letter.reason, letter.service) == (outcome.dead_letter_id, "poison", "shop")
    assert letter.traceback is None
    assert _outcomes(store, job_id, "shop") == ["lost"]  # no new execution started
    assert _tenant_rows(targets.engines["shop"])["customers"] == {SUBJECT: 10, OTHER: 10}
    assert finalize_if_done(store, job_id) == "failed"
