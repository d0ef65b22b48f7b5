"""Recording faults (``tasks.recording``, ``tasks.retry_policy``, ``models.store.faults``):
transient faults are retried with backoff and then dead-lettered, a busy subject is
tried again without counting a retry, permanent faults are dead-lettered at once.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from models.registry import Registry
from models.store.database import JobStore
from tasks.retry_policy import backoff
from tests.unit.job_world import (
    REFUSED_URL,
    SUBJECT,
    Targets,
    _events,
    _letters,
    _outcomes,
    _run,
    _settings,
    _submit,
    _task,
)
from worker.database import create_engine
from worker.exceptions import SubjectLocked

pytestmark = pytest.mark.usefixtures("in_process_broker")


def test_transient_faults_are_retried_then_dead_lettered(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    targets.engines["billing"] = refused = create_engine(REFUSED_URL, pool_pre_ping=False)
    job_id = _submit(store, registry, "billing")
    settings = _settings(max_retries=2, retry_backoff_seconds=0.01, retry_backoff_max_seconds=0.02)

    first = _run(store, registry, settings, job_id, "billing", targets)
    task = _task(store, job_id, "billing")
    assert first.again_in is not None
    assert 0.005 <= first.again_in <= 0.01  # retry 1: [base/2, base]
    assert (first.result.status, first.finished) == ("retrying", False)
    assert (task.status, task.retries, task.lease_id) == ("retrying", 1, None)
    assert task.retry_at is not None

    second = _run(store, registry, settings, job_id, "billing", targets)
    assert second.again_in is not None
    assert 0.005 <= second.again_in <= 0.02  # retry 2: [base/2, min(cap, 2 * base)]
    assert _task(store, job_id, "billing").retries == 2

    last = _run(store, registry, settings, job_id, "billing", targets)
    assert last.finished
    assert last.again_in is None
    assert last.dead_letter_id is not None
    task = _task(store, job_id, "billing")
    assert (task.status, task.retries, task.attempts) == ("failed", 2, 3)
    assert task.error is not None
    assert task.error.endswith("(gave up after 2 retries)")
    assert "127.0.0.1" not in task.error  # no DSN
    assert _outcomes(store, job_id, "billing") == ["retry", "retry", "failed"]
    retries = _events(store, job_id, "task.retry")
    assert [e.detail["retry"] for e in retries] == [1, 2]
    assert {e.detail["service"] for e in retries} == {"billing"}
    [letter] = _letters(store, job_id)
    assert (letter.id, letter.reason, letter.attempts) == (
        last.dead_letter_id,
        "retries_exhausted",
        3,
    )
    assert letter.error == task.error
    refused.dispose()


def test_a_busy_subject_is_tried_again_without_counting_a_retry(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    class Locked(Targets):
        def __call__(self, service: str) -> sa.Engine:
            raise SubjectLocked(2.0)

    job_id = _submit(store, registry, "billing")
    settings = _settings(max_retries=1, retry_backoff_seconds=0.01, retry_backoff_max_seconds=0.02)

    outcomes = [_run(store, registry, settings, job_id, "billing", Locked(registry)) for _ in "abc"]

    for outcome in outcomes:
        assert outcome.again_in is not None
        assert 0.01 <= outcome.again_in <= 0.02  # backoff(1, 2 * base, cap)
        assert (outcome.result.status, outcome.finished) == ("retrying", False)
    task = _task(store, job_id, "billing")
    assert (task.status, task.retries, task.attempts) == ("retrying", 0, 3)
    assert task.error is not None
    assert "another erasure of this subject is running" in task.error
    assert _outcomes(store, job_id, "billing") == ["busy"] * 3
    assert _events(store, job_id, "task.retry") == []
    assert _letters(store, job_id) == []
    # Once the lock is free the task runs.
    assert _run(store, registry, settings, job_id, "billing", targets).result.status == "succeeded"


@pytest.mark.parametrize(
    "cause",
    [
        "missing-url",  # BILLING_URL is not set in the worker's environment
        "missing-table",  # a registry table policy names a table the database lacks
        "internal",  # a bug whose message quotes the subject
    ],
)
def test_permanent_faults_are_dead_lettered_at_once(
    store: JobStore, registry: Registry, targets: Targets, cause: str
) -> None:
    service = "legacy" if cause == "missing-table" else "billing"
    if cause == "missing-url":
        del targets.engines["billing"]
    elif cause == "missing-table":
        targets.engines["legacy"] = targets.engines["billing"]
    else:

        class Broken(Targets):
            def __call__(self, service: str) -> sa.Engine:
                raise ValueError(f"unexpected row for {SUBJECT}")

        targets = Broken(registry, targets.engines)
    job_id = _submit(store, registry, service)

    outcome = _run(store, registry, _settings(), job_id, service, targets)

    assert outcome.finished
    assert outcome.result.status == "failed"
    task = _task(store, job_id, service)
    assert (task.status, task.retries, task.attempts) == ("failed", 0, 1)
    assert task.error is not None
    assert SUBJECT not in task.error
    assert _outcomes(store, job_id, service) == ["failed"]
    [letter] = _letters(store, job_id)
    assert (letter.id, letter.reason) == (outcome.dead_letter_id, "permanent")
    assert letter.traceback is not None
    assert 'File "' in letter.traceback  # frames...
    assert SUBJECT not in letter.traceback  # ...but not the exception's message
    expected_error = {
        "missing-url": "environment variable BILLING_URL",
        "missing-table": "no_such_table",
        "internal": "internal error ValueError",
    }[cause]
    assert expected_error in task.error


def test_an_internal_error_is_logged(
    store: JobStore, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Targets):
        def __call__(self, service: str) -> sa.Engine:
            raise ValueError("a bug")

    job_id = _submit(store, registry, "billing")

    with caplog.at_level(logging.ERROR, logger="eraser.erase"):
        _run(store, registry, _settings(), job_id, "billing", Broken(registry))

    assert _task(store, job_id, "billing").status == "failed"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"task {job_id}/billing failed with ValueError"
    ]


@pytest.mark.parametrize(
    ("retry", "base", "cap", "low", "high"),
    [
        (1, 1.0, 8.0, 0.5, 1.0),  # first retry: [base/2, base]
        (2, 1.0, 8.0, 0.5, 2.0),  # doubles
        (4, 1.0, 8.0, 0.5, 8.0),  # reaches the cap
        (30, 1.0, 8.0, 0.5, 8.0),  # stays at the cap
        (0, 1.0, 8.0, 0.5, 1.0),  # no retry yet counts as the first
        (3, 1.0, 0.2, 0.2, 0.2),  # a cap below base/2 wins
        (2, 0.0, 8.0, 0.0, 0.0),  # no backoff at all
    ],
)
def test_backoff_bounds(retry: int, base: float, cap: float, low: float, high: float) -> None:
    delays = [backoff(retry, base, cap) for _ in range(300)]
    assert all(low <= d <= high for d in delays)
    if high > low:
        assert len(set(delays)) > 1  # jittered
