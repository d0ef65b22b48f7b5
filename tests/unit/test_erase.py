"""One execution of ``eraser.erase_service`` through ``execute_task``: what it records
(rows per table, one attempt), duplicates that find the task finished, time slices,
and a run whose lease is taken over mid-way. Assertions read the job store's rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import Registry
from models.store.database import JobStore
from tasks.execution import Delivery, Outcome
from tests.unit.job_world import (
    OTHER,
    SUBJECT,
    Targets,
    _attempts,
    _invoices,
    _make_billing,
    _make_shop,
    _outcomes,
    _rows_by_table,
    _run,
    _settings,
    _submit,
    _task,
    _tenant_rows,
)
from worker.service import PlanCache

pytestmark = pytest.mark.usefixtures("in_process_broker")


def test_success_records_rows_and_one_attempt(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    delivery = Delivery(celery_id="c-1", worker="w1@host")

    outcome = _run(store, registry, _settings(), job_id, "shop", targets, delivery)

    assert outcome.finished
    assert (outcome.again_in, outcome.superseded, outcome.dead_letter_id) == (None, False, None)
    assert (outcome.result.status, outcome.result.total_rows) == ("succeeded", 40)
    task = _task(store, job_id, "shop")
    assert (task.status, task.total_rows, task.verified) == ("succeeded", 40, True)
    assert (task.attempts, task.retries, task.crashes, task.lease_id) == (1, 0, 0, None)
    assert _rows_by_table(task) == {"main.customers": 10, "main.orders": 30}
    [attempt] = _attempts(store, job_id, "shop")
    assert (attempt.outcome, attempt.rows, attempt.number) == ("succeeded", 40, 1)
    assert (attempt.celery_id, attempt.worker) == ("c-1", "w1@host")
    assert attempt.finished_at is not None
    assert _tenant_rows(targets.engines["shop"]) == {
        "customers": {OTHER: 10},
        "orders": {OTHER: 30},
    }


def test_a_finished_task_is_not_run_again(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    first = _run(store, registry, _settings(), job_id, "shop", targets)
    again = _run(store, registry, _settings(), job_id, "shop", targets, Delivery("c-dup", True))
    assert again.result == first.result
    assert _outcomes(store, job_id, "shop") == ["succeeded"]


def _slice_until_done(
    store: JobStore,
    registry: Registry,
    job_id: str,
    service: str,
    targets: Targets,
    limit: int,
) -> list[Outcome]:
    """Run executions as the Celery task would (again after ``again_in == 0``) until one
    finishes, at most ``limit`` of them."""
    # Each execution stops at its first batch boundary (batch_size = 50 in the registry).
    settings = _settings(slice_seconds=0.001)
    plans = PlanCache()
    outcomes: list[Outcome] = []
    for _ in range(limit):
        outcome = _run(store, registry, settings, job_id, service, targets, plans=plans)
        outcomes.append(outcome)
        if outcome.finished:
            break
        assert outcome.again_in == 0
        assert outcome.result.status == "running"
        task = _task(store, job_id, service)
        assert (task.status, task.lease_id) == ("running", None)
    return outcomes


def test_time_slices_continue_until_done(
    store: JobStore, registry: Registry, targets: Targets, tmp_path: Path
) -> None:
    targets.engines["billing"] = billing = _make_billing(tmp_path / "big.db", invoices=5000)
    job_id = _submit(store, registry, "billing")

    outcomes = _slice_until_done(store, registry, job_id, "billing", targets, limit=200)

    assert outcomes[-1].finished
    assert outcomes[-1].result.status == "succeeded"
    # 2500 rows in batches of 50, one batch per slice; the last execution only verifies.
    assert len(outcomes) == 51
    task = _task(store, job_id, "billing")
    assert (task.total_rows, task.attempts, task.retries, task.crashes) == (2500, 51, 0, 0)
    assert _rows_by_table(task) == {"main.invoices": 2500}
    attempts = _attempts(store, job_id, "billing")
    assert [a.outcome for a in attempts] == ["sliced"] * 50 + ["succeeded"]
    assert [a.rows for a in attempts] == [50] * 50 + [0]
    assert _invoices(billing) == {OTHER: 2500}


def test_time_slices_finish_when_an_earlier_slice_emptied_a_child_table(
    store: JobStore, registry: Registry, targets: Targets, tmp_path: Path
) -> None:
    targets.engines["shop"] = shop = _make_shop(tmp_path / "big.db", customers=200, orders=5000)
    before = _tenant_rows(shop)
    assert before["orders"] == {SUBJECT: 2500, OTHER: 2500}
    job_id = _submit(store, registry)

    outcomes = _slice_until_done(store, registry, job_id, "shop", targets, limit=200)

    assert len(outcomes) > 10  # really sliced
    assert outcomes[-1].finished, f"not finished after {len(outcomes)} slices"
    assert outcomes[-1].result.status == "succeeded"
    task = _task(store, job_id, "shop")
    assert task.total_rows == 2600
    assert _rows_by_table(task) == {"main.customers": 100, "main.orders": 2500}
    attempts = _attempts(store, job_id, "shop")
    assert [a.outcome for a in attempts] == ["sliced"] * (len(outcomes) - 1) + ["succeeded"]
    assert sum(a.rows for a in attempts) == 2600
    assert _tenant_rows(shop) == {
        "customers": {OTHER: before["customers"][OTHER]},
        "orders": {OTHER: 2500},
    }
