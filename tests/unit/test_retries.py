"""Operators' second chances (``tasks.submit.retry_job``/``replay_dead_letter`` over
``models.store.retries``): only the failed tasks run again, a dead letter replays once,
and every refusal says why.
"""

from __future__ import annotations

import pytest

from models.registry import Registry
from models.store.database import JobStore
from tasks.execution import Delivery
from tasks.finalize import finalize, finalize_if_done
from tasks.submit import RetryRefused, dispatch, replay_dead_letter, retry_job
from tests.unit.job_world import (
    QUEUE,
    Targets,
    _events,
    _job,
    _letters,
    _outcomes,
    _run,
    _settings,
    _submit,
    _task,
)

pytestmark = pytest.mark.usefixtures("in_process_broker")


def _partially_failed_job(store: JobStore, registry: Registry, targets: Targets) -> str:
    """shop succeeded; billing failed for good (its URL is not set)."""
    billing = targets.engines.pop("billing")
    job_id = _submit(store, registry, "shop", "billing")
    assert dispatch(store, registry, job_id, QUEUE)
    _run(store, registry, _settings(), job_id, "shop", targets, Delivery("c-shop"))
    _run(store, registry, _settings(), job_id, "billing", targets, Delivery("c-billing"))
    assert finalize(store, job_id) == "partially_failed"
    targets.engines["billing"] = billing  # now it works
    return job_id


def test_retry_job_reruns_only_the_failed_tasks(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _partially_failed_job(store, registry, targets)
    shop_before = _task(store, job_id, "shop")
    [letter] = _letters(store, job_id)

    assert retry_job(store, registry, job_id, QUEUE, actor="ops@example.com") == ["billing"]

    job = _job(store, job_id)
    assert (job.status, job.finished_at) == ("running", None)
    billing = _task(store, job_id, "billing")
    assert (billing.status, billing.retries, billing.crashes, billing.error) == (
        "pending",
        0,
        0,
        None,
    )
    assert billing.finished_at is None
    shop = _task(store, job_id, "shop")
    assert (shop.status, shop.attempts, shop.total_rows) == ("succeeded", 1, 40)
    assert shop.finished_at == shop_before.finished_at
    assert _outcomes(store, job_id, "shop") == ["succeeded"]
    [replayed] = _letters(store, job_id)
    assert replayed.id == letter.id
    assert replayed.replayed_at is not None
    assert replayed.replayed_by == "ops@example.com"
    [event] = _events(store, job_id, "job.retried")
    assert event.actor == "ops@example.com"
    assert event.detail == {"services": ["billing"], "dead_letters": [letter.id]}
    # Nothing left to retry; the letter cannot be replayed a second time.
    with pytest.raises(RetryRefused, match="no failed task"):
        retry_job(store, registry, job_id, QUEUE)
    with pytest.raises(RetryRefused, match=f"dead letter {letter.id} was replayed at .* by ops"):
        replay_dead_letter(store, registry, letter.id, QUEUE)

    outcome = _run(store, registry, _settings(), job_id, "billing", targets, Delivery("c-retry"))

    assert outcome.result.status == "succeeded"
    assert finalize_if_done(store, job_id) == "succeeded"
    job = _job(store, job_id)
    assert (job.status, job.total_rows) == ("succeeded", 42)
    assert job.finished_at is not None
    assert _outcomes(store, job_id, "billing") == ["failed", "succeeded"]
    assert _outcomes(store, job_id, "shop") == ["succeeded"]
    assert _task(store, job_id, "billing").attempts == 2


def test_replay_dead_letter_once(store: JobStore, registry: Registry, targets: Targets) -> None:
    job_id = _partially_failed_job(store, registry, targets)
    [letter] = _letters(store, job_id)

    assert replay_dead_letter(store, registry, letter.id, QUEUE, actor="alice") == (
        job_id,
        "billing",
    )

    assert _task(store, job_id, "billing").status == "pending"
    [replayed] = _letters(store, job_id)
    assert replayed.replayed_by == "alice"
    with pytest.raises(RetryRefused, match="was replayed"):
        replay_dead_letter(store, registry, letter.id, QUEUE, actor="bob")
    assert [e.actor for e in _events(store, job_id, "job.retried")] == ["alice"]


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ((), "no failed task to retry"),  # every task succeeded
        (("billing",), "no failed task for service 'billing'"),  # a service of another job
        (("nope",), "no failed task for service 'nope'"),  # an unknown service
    ],
)
def test_retry_refusals(
    store: JobStore,
    registry: Registry,
    targets: Targets,
    services: tuple[str, ...],
    message: str,
) -> None:
    job_id = _submit(store, registry, "shop")
    _run(store, registry, _settings(), job_id, "shop", targets)
    finalize(store, job_id)

    with pytest.raises(RetryRefused, match=message):
        retry_job(store, registry, job_id, QUEUE, services=services)

    assert _job(store, job_id).status == "succeeded"
    assert _events(store, job_id, "job.retried") == []


def test_retry_refusals_for_missing_ids(store: JobStore, registry: Registry) -> None:
    with pytest.raises(RetryRefused, match="no job nope"):
        retry_job(store, registry, "nope", QUEUE)
    with pytest.raises(RetryRefused, match="no dead letter 12345"):
        replay_dead_letter(store, registry, 12345, QUEUE)
