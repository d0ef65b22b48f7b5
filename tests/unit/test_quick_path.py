"""The quick path (``tasks.quick_path`` over ``models.store.nothing_found``): a task
whose service holds nothing of the subject is recorded claimed and succeeded at once
(one statement on a PostgreSQL job store); everything else, and every race between
the read and the write, is left to the general path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import models.store.cancellation
import tasks.quick_path
import tasks.submit
from models.messages import TaskResult
from models.registry import Registry
from models.store.database import JobStore
from models.store.nothing_found import one_statement_record
from models.store.progress import SETTLED
from models.store.tables import Attempt, TaskStatus, utcnow
from tasks.execution import Delivery, Outcome
from tasks.finalize import finalize
from tasks.submit import (
    cancel_job,
)
from tests.unit import shop_world
from tests.unit.job_world import (
    OTHER,
    SUBJECT,
    Targets,
    _attempts,
    _hold_lease,
    _invoices,
    _job,
    _task,
    _tenant_rows,
    _update_task,
)
from tests.unit.shop_world import (
    _add_attempt,
    _counts,
    _history,
    _run,
    _statements,
    _submit,
)
from worker.prepared import Prepared
from worker.service import PlanCache, nothing_here

pytestmark = pytest.mark.usefixtures("broker_emptied")

#: This world's targets: twenty customers in shop, half of them the subject's.
targets = shop_world.targets
#: This world's broker, emptied before and after each test.
broker_emptied = shop_world.broker_emptied


def test_a_task_with_nothing_to_erase_is_claimed_and_succeeds_at_once(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    shop_before = _tenant_rows(targets.engines["shop"])
    plans = PlanCache()
    before = utcnow()

    outcome = _run(
        store, registry, job_id, "shop", targets, plans, Delivery("c-1", worker="w1@host")
    )

    after = utcnow()
    assert outcome.result == TaskResult(
        job_id=job_id, service="shop", status="succeeded", total_rows=0
    )
    assert (outcome.finished, outcome.last) == (True, True)
    assert (outcome.again_in, outcome.superseded, outcome.dead_letter_id) == (None, False, None)
    task = _task(store, job_id, "shop")
    assert (task.status, task.attempts, task.retries, task.crashes) == ("succeeded", 1, 0, 0)
    assert (task.lease_id, task.total_rows, task.verified, task.error) == (None, 0, True, None)
    assert task.celery_id == "c-1"
    # Every table of the plan, with nothing removed.
    assert task.rows == [
        {"table": "main.customers", "action": "delete", "rows": 0},
        {"table": "main.orders", "action": "delete", "rows": 0},
    ]
    kept = plans.peek("shop", "tenant")
    assert kept is not None
    assert task.plan_fingerprint == kept[2].fingerprint
    assert task.started_at is not None
    assert task.finished_at is not None
    assert before <= task.started_at <= task.finished_at <= after
    [attempt] = _attempts(store, job_id, "shop")
    assert (attempt.number, attempt.outcome, attempt.rows) == (1, "succeeded", 0)
    assert (attempt.celery_id, attempt.worker) == ("c-1", "w1@host")
    assert attempt.lease_id  # an execution of its own, though it never held the task
    assert attempt.finished_at is not None
    assert before <= attempt.started_at <= attempt.finished_at <= after
    assert _tenant_rows(targets.engines["shop"]) == shop_before

    # The message delivered again (its worker was lost before the ack): the first
    # outcome stands, and no second execution is recorded.
    again = _run(store, registry, job_id, "shop", targets, plans, Delivery("c-1", True))

    assert again.result == outcome.result
    assert (again.finished, again.last, again.again_in) == (False, False, None)
    assert _history(store, job_id, "shop") == [(1, "succeeded")]
    assert _task(store, job_id, "shop").attempts == 1


def test_with_a_kept_plan_the_target_sees_one_read_and_the_job_store_two_statements(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    plans = PlanCache()
    first = _submit(store, registry)
    assert _run(store, registry, first, "shop", targets, plans).finished  # plans the service
    job_id = _submit(store, registry)

    with _statements(targets.engines["shop"]) as target, _statements(store.engine) as jobs:
        outcome = _run(store, registry, job_id, "shop", targets, plans)

    assert (outcome.result.status, outcome.finished) == ("succeeded", True)
    # The verification and the schema's version, in one statement: no version query
    # of its own, no reflection, no lock, no write.
    [statement] = target
    assert statement.lstrip().upper().startswith("SELECT")
    assert "schema_version" in statement
    if store.engine.dialect.name == "postgresql":
        # The plain read of the task, then the claim, the attempt and the count at once.
        # The record is prepared once per connection (its PREPARE goes outside the
        # statement events), then run as EXECUTE.
        read, record = jobs
        assert read.lstrip().upper().startswith("SELECT")
        prepared = one_statement_record(store.engine.dialect, Prepared)
        assert record == prepared.execute_sql
        assert "UPDATE eraser_tasks" in prepared.sql
        assert "INSERT INTO eraser_task_attempts" in prepared.sql
    assert _history(store, job_id, "shop") == [(1, "succeeded")]


def test_last_says_whether_another_task_of_the_job_is_still_open(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    plans = PlanCache()
    job_id = _submit(store, registry, "shop", "billing")

    shop = _run(store, registry, job_id, "shop", targets, plans)

    assert (shop.finished, shop.last) == (True, False)  # billing is still pending

    billing = _run(store, registry, job_id, "billing", targets, plans)

    assert (billing.finished, billing.last) == (True, True)
    assert finalize(store, job_id) == "succeeded"
    job = _job(store, job_id)
    assert (job.total_rows, job.finished_at is not None) == (0, True)


def test_a_task_retrying_after_a_busy_attempt_finishes_in_one_more(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    first_start = utcnow() - timedelta(seconds=30)
    _update_task(
        store,
        job_id,
        "shop",
        status=TaskStatus.RETRYING,
        attempts=1,
        started_at=first_start,
        retry_at=utcnow(),
        error="another erasure of this subject is running",
    )
    _add_attempt(store, job_id, "shop", 1, "busy")

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache())

    assert (outcome.result.status, outcome.finished) == ("succeeded", True)
    task = _task(store, job_id, "shop")
    assert (task.attempts, task.total_rows, task.error, task.retry_at) == (2, 0, None, None)
    assert task.started_at == first_start  # when the task first started, not this execution
    assert _history(store, job_id, "shop") == [(1, "busy"), (2, "succeeded")]


def test_a_dry_run_goes_the_general_way(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry, dry_run=True)

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache())

    assert (outcome.result.status, outcome.finished) == ("succeeded", True)
    task = _task(store, job_id, "shop")
    # A dry run counts; it verifies nothing (the quick path would record it verified).
    assert (task.verified, task.total_rows, task.attempts) == (False, 0, 1)
    assert _history(store, job_id, "shop") == [(1, "succeeded")]


def test_a_subject_with_rows_is_erased_by_the_general_path(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry, "shop", "billing", subject=SUBJECT)
    plans = PlanCache()

    shop = _run(store, registry, job_id, "shop", targets, plans, Delivery("c-shop"))
    billing = _run(store, registry, job_id, "billing", targets, plans, Delivery("c-billing"))

    assert (shop.result.total_rows, shop.last) == (40, False)
    assert (billing.result.total_rows, billing.last) == (2, True)
    assert _tenant_rows(targets.engines["shop"]) == {
        "customers": {OTHER: 10},
        "orders": {OTHER: 30},
    }
    assert _invoices(targets.engines["billing"]) == {OTHER: 2}
    task = _task(store, job_id, "shop")
    assert (task.total_rows, task.verified, task.attempts) == (40, True, 1)
    assert _counts(task) == {"main.customers": 10, "main.orders": 30}
    [attempt] = _attempts(store, job_id, "shop")
    assert (attempt.outcome, attempt.rows, attempt.celery_id) == ("succeeded", 40, "c-shop")


@pytest.mark.parametrize(
    ("age_seconds", "waits"),
    [
        (1, True),  # its holder is alive: come back later
        (60, False),  # its holder died: taken over, the crash counted
    ],
)
def test_a_task_held_by_another_execution_goes_the_general_way(
    store: JobStore, registry: Registry, targets: Targets, age_seconds: float, waits: bool
) -> None:
    job_id = _submit(store, registry)
    _hold_lease(store, job_id, "shop", age_seconds=age_seconds)

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache(), Delivery("c-new"))

    task = _task(store, job_id, "shop")
    if waits:
        assert outcome.again_in is not None
        assert not outcome.finished
        assert (task.status, task.attempts, task.crashes) == ("running", 1, 0)
        assert task.lease_id == "lease-of-the-other-execution"
        assert _history(store, job_id, "shop") == [(1, "running")]
    else:
        assert (outcome.result.status, outcome.finished) == ("succeeded", True)
        assert (task.status, task.attempts, task.crashes, task.lease_id) == (
            "succeeded",
            2,
            1,
            None,
        )
        assert _history(store, job_id, "shop") == [(1, "lost"), (2, "succeeded")]


@pytest.mark.parametrize(
    ("status", "outcome_before"),
    [
        # a transient fault after a batch had removed rows: a retry is due
        (TaskStatus.RETRYING, "retry"),
        # between two time slices: the next delivery continues
        (TaskStatus.RUNNING, "sliced"),
    ],
)
def test_rows_counted_by_an_earlier_execution_are_kept(
    store: JobStore,
    registry: Registry,
    targets: Targets,
    status: TaskStatus,
    outcome_before: str,
) -> None:
    job_id = _submit(store, registry)
    _update_task(
        store,
        job_id,
        "shop",
        status=status,
        attempts=1,
        total_rows=7,
        rows=[{"table": "main.customers", "action": "delete", "rows": 7}],
    )
    _add_attempt(store, job_id, "shop", 1, outcome_before)

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache())

    assert (outcome.result.status, outcome.result.total_rows) == ("succeeded", 7)
    task = _task(store, job_id, "shop")
    assert (task.total_rows, task.attempts) == (7, 2)
    assert _counts(task) == {"main.customers": 7, "main.orders": 0}
    assert _history(store, job_id, "shop") == [(1, outcome_before), (2, "succeeded")]


def test_a_cancelled_task_stays_cancelled(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry)
    _update_task(store, job_id, "shop", status=TaskStatus.CANCELLED, finished_at=utcnow())

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache())

    assert (outcome.result.status, outcome.finished) == ("cancelled", False)
    assert (_task(store, job_id, "shop").attempts, _attempts(store, job_id, "shop")) == (0, [])


def test_a_task_claimed_while_its_job_is_cancelled_is_never_marked_cancelled_after_it_ran(
    store: JobStore, registry: Registry, targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cancel_job`` read the pending tasks, then wrote them cancelled by key: a worker
    that claimed and finished one in between had its erasure recorded as cancelled
    (found in review, PostgreSQL store). A worker now claims shop at exactly that
    moment: it waits for the cancel to commit and then finds the task cancelled."""
    job_id = _submit(store, registry, "shop", "billing", subject=SUBJECT)
    shop_before = _tenant_rows(targets.engines["shop"])
    real_utcnow = models.store.cancellation.utcnow
    worker: dict[str, Any] = {}

    def a_worker_claims_shop_now() -> datetime:
        monkeypatch.setattr(models.store.cancellation, "utcnow", real_utcnow)

        def claim() -> None:
            worker["outcome"] = _run(store, registry, job_id, "shop", targets, PlanCache())

        worker["thread"] = threading.Thread(target=claim)
        worker["thread"].start()
        worker["thread"].join(2.0)  # a claim that did not wait would be done by now
        return real_utcnow()

    monkeypatch.setattr(models.store.cancellation, "utcnow", a_worker_claims_shop_now)
    assert cancel_job(store, job_id) == ["billing", "shop"]
    worker["thread"].join(30)
    assert not worker["thread"].is_alive()

    assert worker["outcome"].result.status == "cancelled"
    shop = _task(store, job_id, "shop")
    assert (shop.status, shop.attempts) == (TaskStatus.CANCELLED, 0)
    assert _attempts(store, job_id, "shop") == []
    assert _tenant_rows(targets.engines["shop"]) == shop_before


def test_a_failing_quick_check_is_recorded_by_the_general_path(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    del targets.engines["billing"]  # BILLING_URL is not set: the engine cannot be made
    job_id = _submit(store, registry, "billing")

    outcome = _run(store, registry, job_id, "billing", targets, PlanCache())

    assert (outcome.result.status, outcome.finished) == ("failed", True)
    assert outcome.dead_letter_id is not None
    task = _task(store, job_id, "billing")
    assert task.error is not None
    assert "BILLING_URL" in task.error
    assert _history(store, job_id, "billing") == [(1, "failed")]


def _claimed_meanwhile(store: JobStore, job_id: str) -> None:
    """Another execution claims the task and is still running."""
    _hold_lease(store, job_id, "shop", age_seconds=0)


def _finished_meanwhile(store: JobStore, job_id: str) -> None:
    """Another execution (a duplicated message) ran the task to its end."""
    _update_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED, attempts=1, verified=True)
    _add_attempt(store, job_id, "shop", 1, "succeeded")


def _busy_meanwhile(store: JobStore, job_id: str) -> None:
    """Another execution claimed the retrying task, met the subject's lock and put the
    task back to retrying: the status reads as before, only the attempts moved."""
    _update_task(store, job_id, "shop", status=TaskStatus.RETRYING, attempts=2)
    _add_attempt(store, job_id, "shop", 2, "busy")


def _cancelled_meanwhile(store: JobStore, job_id: str) -> None:
    """An operator cancelled the job: only the status moved (a cancelled task never ran)."""
    assert cancel_job(store, job_id, actor="ops@example.com") == ["shop"]


@dataclass(frozen=True)
class Race:
    """A change made to the task between the quick path's read and its update, and
    what the general path then makes of the execution."""

    change: Callable[[JobStore, str], None]
    status: str
    finished: bool
    waits: bool
    history: list[tuple[int, str]]
    attempts: int


RACES = {
    "claimed": Race(_claimed_meanwhile, "running", False, True, [(1, "running")], 1),
    "finished": Race(_finished_meanwhile, "succeeded", False, False, [(1, "succeeded")], 1),
    "busy": Race(
        _busy_meanwhile, "succeeded", True, False, [(1, "busy"), (2, "busy"), (3, "succeeded")], 3
    ),
    "cancelled": Race(_cancelled_meanwhile, "cancelled", False, False, [], 0),
}


@pytest.mark.parametrize("race", list(RACES))
def test_a_task_changed_after_the_read_is_left_to_the_general_path(
    store: JobStore,
    registry: Registry,
    targets: Targets,
    monkeypatch: pytest.MonkeyPatch,
    race: str,
) -> None:
    case = RACES[race]
    job_id = _submit(store, registry)
    if race == "busy":  # retrying after a first busy attempt
        _update_task(store, job_id, "shop", status=TaskStatus.RETRYING, attempts=1)
        _add_attempt(store, job_id, "shop", 1, "busy")
    checks: list[bool] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        # The engine finds nothing; meanwhile the task moves in the job store.
        report = nothing_here(*args, **kwargs)
        checks.append(report is not None)
        case.change(store, job_id)
        return report

    monkeypatch.setattr(tasks.quick_path, "nothing_here", racing)

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache(), Delivery("c-late"))

    assert checks == [True]  # the quick path got as far as its update
    assert (outcome.result.status, outcome.finished) == (case.status, case.finished)
    assert (outcome.again_in is not None) == case.waits
    assert _history(store, job_id, "shop") == case.history
    task = _task(store, job_id, "shop")
    assert (task.status, task.attempts) == (case.status, case.attempts)
    if race == "claimed":
        assert task.lease_id == "lease-of-the-other-execution"
    if race == "cancelled":
        assert _job(store, job_id).status == "cancelled"


def test_duplicated_messages_racing_on_one_task_record_one_execution(
    store: JobStore, registry: Registry, targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _submit(store, registry)
    copies = 4
    lined_up = threading.Barrier(copies, timeout=30)

    def all_at_once(*args: Any, **kwargs: Any) -> Any:
        report = nothing_here(*args, **kwargs)
        lined_up.wait()  # every copy read the task as pending: they update together
        return report

    monkeypatch.setattr(tasks.quick_path, "nothing_here", all_at_once)
    plans = PlanCache()
    outcomes: dict[str, Outcome] = {}

    def deliver(celery_id: str) -> None:
        outcomes[celery_id] = _run(
            store, registry, job_id, "shop", targets, plans, Delivery(celery_id)
        )

    threads = [threading.Thread(target=deliver, args=(f"c-{i}",)) for i in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == copies
    assert {o.result.status for o in outcomes.values()} == {"succeeded"}
    [winner] = [celery_id for celery_id, o in outcomes.items() if o.finished]
    assert [o.last for o in outcomes.values()].count(True) == 1
    [attempt] = _attempts(store, job_id, "shop")
    assert (attempt.number, attempt.outcome, attempt.celery_id) == (1, "succeeded", winner)
    task = _task(store, job_id, "shop")
    assert (task.status, task.attempts, task.celery_id) == ("succeeded", 1, winner)


def test_an_earlier_execution_with_counts_to_settle_goes_the_general_way(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    # An execution that kept a ledger ended with no count carried (killed before its
    # first heartbeat, or its connection lost mid-commit): its batches may have
    # removed rows, so "nothing here" now must not be recorded as 0 rows at once.
    job_id = _submit(store, registry)
    _update_task(store, job_id, "shop", status=TaskStatus.RETRYING, attempts=1)
    _add_attempt(store, job_id, "shop", 1, "retry")
    with store.transaction() as session:
        session.execute(
            sa.update(Attempt).where(Attempt.lease_id == "lease-1").values(ledger_seq=0)
        )

    outcome = _run(store, registry, job_id, "shop", targets, PlanCache())

    assert (outcome.result.status, outcome.finished) == ("succeeded", True)
    with store.transaction() as session:
        first = session.scalars(sa.select(Attempt).where(Attempt.lease_id == "lease-1")).one()
        # The general path settled it from the (empty) ledger before recording.
        assert first.ledger_seq == SETTLED
