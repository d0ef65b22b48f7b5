"""The fast paths of orchestration, on the plain functions behind the Celery tasks:

- a task whose service holds nothing of the subject records itself claimed and
  succeeded at once (``tasks.quick_path``; one statement on a PostgreSQL job
  store), and leaves everything else to the general path;
- a kept plan is checked against the schema's version in the verification statement
  (``worker.service.nothing_here``): a schema change is never missed;
- ``submit_and_dispatch`` stamps the job in the creating transaction and takes the stamp
  back when the broker refuses the chord; ``not_watching_results`` is undone on exit;
- ``finalize`` builds the completion event from the rows it has just written.

Job stores are SQLite and PostgreSQL, targets SQLite shops (every backend for schema
changes), and the broker is the in-process ``memory://`` transport. Assertions read the
job store's rows, the targets' rows and the messages on the broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kombu.exceptions import OperationalError

import models.store.cancellation
import tasks.quick_path
import tasks.submit
from models.messages import ErasureRequest, TaskResult
from models.registry import Registry
from models.settings import Settings
from models.store.database import JobStore
from models.store.nothing_found import one_statement_record
from models.store.tables import Attempt, AuditEvent, Job, Task, TaskStatus, utcnow
from tasks.erase import erase_service, execute_task
from tasks.events import EVENTS_QUEUE, completion_event
from tasks.execution import Delivery, Outcome
from tasks.finalize import finalize
from tasks.queues import Queue
from tasks.reaper import reap
from tasks.resources import Resources, reset_resources, use_resources
from tasks.submit import (
    cancel_job,
    dispatch,
    not_watching_results,
    request_dispatch,
    submit,
    submit_and_dispatch,
)
from tests.conftest import TargetDB, make_db
from tests.unit import test_resilience
from tests.unit.test_resilience import (
    OTHER,
    QUEUE,
    SUBJECT,
    Targets,
    _attempts,
    _hold_lease,
    _invoices,
    _job,
    _make_billing,
    _make_shop,
    _settings,
    _task,
    _tenant_rows,
    _update_job,
    _update_task,
)
from worker.app import app
from worker.prepared import Prepared
from worker.service import PlanCache, nothing_here

#: A subject that no target holds: every task of its jobs has nothing to erase.
NOBODY = "nobody-0c41"

STORES = [
    pytest.param("sqlite"),
    # the one-statement branch (UPDATE ... RETURNING, INSERT ... SELECT, count)
    pytest.param("postgresql", marks=pytest.mark.postgres),
]
TARGETS = [
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_process_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the tests alone; messages go to the in-process broker, whose
    queues are emptied before and after each test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"ERASER_{name.upper()}", raising=False)
    for variable in ("SHOP_URL", "BILLING_URL", "LEGACY_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert app.conf.broker_url.startswith("memory://"), "these tests need the in-process broker"
    _purge()
    yield
    _purge()


def _purge() -> dict[str, int]:
    """Empty the broker's queues; returns how many messages each held."""
    with app.connection_for_write() as conn:
        return {
            queue: int(conn.default_channel.queue_purge(queue) or 0)
            for queue in (QUEUE, Queue.DEAD_LETTER.value, EVENTS_QUEUE.name)
        }


# The resilience tests' fixtures: a migrated job store (SQLite unless a test asks for
# ``postgresql``) and the registry.
store = test_resilience.store
registry = test_resilience.registry


@pytest.fixture
def targets(registry: Registry, tmp_path: Path) -> Iterator[Targets]:
    """shop: 20 customers (half of them SUBJECT's) and 60 orders; billing: 4 invoices."""
    shop = _make_shop(tmp_path / "shop.db", customers=20, orders=60)
    billing = _make_billing(tmp_path / "billing.db")
    result = Targets(registry, {"shop": shop, "billing": billing})
    yield result
    for engine in result.engines.values():
        engine.dispose()


# --- helpers ---------------------------------------------------------------------------------


def _submit(
    store: JobStore,
    registry: Registry,
    *services: str,
    subject: str = NOBODY,
    dry_run: bool = False,
) -> str:
    request = ErasureRequest(
        subject_kind="tenant",
        subject_value=subject,
        services=list(services or ["shop"]),
        dry_run=dry_run,
    )
    job, created = submit(store, registry, request)
    assert created
    return job.id


def _run(
    store: JobStore,
    registry: Registry,
    job_id: str,
    service: str,
    targets: Targets,
    plans: PlanCache,
    delivery: Delivery | None = None,
) -> Outcome:
    return execute_task(
        store, registry, _settings(), job_id, service, delivery, engine_for=targets, plans=plans
    )


def _add_attempt(store: JobStore, job_id: str, service: str, number: int, outcome: str) -> None:
    """An ended execution in the task's history (as one that ran before would leave)."""
    with store.transaction() as session:
        task_id = session.scalar(
            sa.select(Task.id).where(Task.job_id == job_id, Task.service == service)
        )
        assert task_id is not None
        session.add(
            Attempt(
                task_id=task_id,
                number=number,
                lease_id=f"lease-{number}",
                outcome=outcome,
                finished_at=utcnow(),
            )
        )


def _history(store: JobStore, job_id: str, service: str) -> list[tuple[int, str]]:
    return [(a.number, a.outcome) for a in _attempts(store, job_id, service)]


def _counts(task: Task) -> dict[str, int]:
    return {str(r["table"]): int(r["rows"]) for r in task.rows}


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` sends while the block runs, without transaction
    control (SQLite engines send their own ``BEGIN``, see ``worker.database``)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if not statement.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


# --- nothing to erase: recorded at once ------------------------------------------------------


@pytest.mark.parametrize("store", STORES, indirect=True)
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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


# --- nothing to erase: the general path decides -------------------------------------------


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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


# --- nothing to erase: the task changes between the read and the update ------------------


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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


# --- a kept plan and a changed schema --------------------------------------------------------


SHOP_DDL = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id VARCHAR(40) NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
    "FOREIGN KEY (customer_id) REFERENCES customers (id))",
    f"INSERT INTO customers VALUES (1, '{OTHER}'), (2, '{OTHER}')",
    "INSERT INTO orders VALUES (1, 1), (2, 2)",
    "CREATE TABLE visits (id INTEGER PRIMARY KEY, tenant_id VARCHAR(40) NOT NULL)",
)
#: What happens to the target after its plan was kept (DDL first, then a subject row).
CHANGES = {
    # a new table with the subject column
    "new table": (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id VARCHAR(40) NOT NULL)",
        f"INSERT INTO notes VALUES (1, '{SUBJECT}')",
    ),
    # an existing table gains the subject column
    "new column": (
        "ALTER TABLE orders ADD tenant_id VARCHAR(40)",
        f"UPDATE orders SET tenant_id = '{SUBJECT}' WHERE id = 2",
    ),
    # a planned table with the subject column goes (the kept plan's statement names it)
    "dropped table": ("DROP TABLE visits", f"INSERT INTO customers VALUES (3, '{SUBJECT}')"),
    # no schema change: a subject row in a planned table
    "new row": (f"INSERT INTO customers VALUES (3, '{SUBJECT}')",),
}
#: ``nothing_here`` runs the kept plan's statement before it looks at the version; a
#: plan naming a dropped table makes that statement fail, so it raises instead of
#: rebuilding the plan (the task's general path rebuilds it: see the test below).
#: Where the subject's row was put by each change: (table, column).
PUT = {
    "new table": ("notes", "tenant_id"),
    "new column": ("orders", "tenant_id"),
    "dropped table": ("customers", "tenant_id"),
    "new row": ("customers", "tenant_id"),
}


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDB]:
    """A shop on each target backend in turn, holding nothing of SUBJECT."""
    for db in make_db(request.param, tmp_path):
        db.run(*SHOP_DDL)
        yield db


def _nothing_here(db: TargetDB, registry: Registry, plans: PlanCache) -> bool:
    report = nothing_here(
        db.engine,
        "shop",
        registry.services["shop"],
        "tenant",
        registry.subject_columns("shop", "tenant"),
        SUBJECT,
        plans,
    )
    if report is not None:
        assert (report.total_rows, report.verified) == (0, True)
    return report is not None


@pytest.mark.parametrize("change", CHANGES)
def test_a_kept_plan_does_not_hide_rows_after_the_schema_changed(
    target: TargetDB, registry: Registry, change: str
) -> None:
    plans = PlanCache()
    assert _nothing_here(target, registry, plans)
    kept = plans.peek("shop", "tenant")
    assert kept is not None
    with _statements(target.engine) as statements:
        assert _nothing_here(target, registry, plans)  # the kept plan serves again...
    assert len(statements) == 1  # ...checked against the schema's version in one read
    assert plans.peek("shop", "tenant") == kept

    target.run(*CHANGES[change])

    assert not _nothing_here(target, registry, plans)
    now = plans.peek("shop", "tenant")
    assert now is not None
    if change == "new row":
        assert now[2] is kept[2]
    else:
        assert now[1] != kept[1]  # the version the new plan was made at
        assert now[2].fingerprint != kept[2].fingerprint


@pytest.mark.postgres
def test_a_kept_plan_sees_a_table_added_in_another_schema(pg: TargetDB, registry: Registry) -> None:
    pg.run(*SHOP_DDL)
    plans = PlanCache()
    assert _nothing_here(pg, registry, plans)

    pg.run(
        'CREATE TABLE "other side".notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL)',
        f"INSERT INTO \"other side\".notes VALUES (1, '{SUBJECT}')",
    )

    assert not _nothing_here(pg, registry, plans)


@pytest.mark.parametrize("change", ["new table", "new column", "dropped table"])
def test_a_task_after_a_schema_change_erases_what_the_kept_plan_did_not_know(
    store: JobStore, registry: Registry, target: TargetDB, change: str
) -> None:
    targets = Targets(registry, {"shop": target.engine})
    plans = PlanCache()  # one worker's: kept from one task to the next
    before = _submit(store, registry, subject=SUBJECT)
    assert _run(store, registry, before, "shop", targets, plans).result.total_rows == 0
    kept = plans.peek("shop", "tenant")
    assert kept is not None

    target.run(*CHANGES[change])
    job_id = _submit(store, registry, subject=SUBJECT)
    outcome = _run(store, registry, job_id, "shop", targets, plans)

    assert (outcome.result.status, outcome.result.total_rows) == ("succeeded", 1)
    task = _task(store, job_id, "shop")
    assert (task.total_rows, task.verified, task.attempts) == (1, True, 1)
    assert sum(_counts(task).values()) == 1
    assert _history(store, job_id, "shop") == [(1, "succeeded")]
    assert task.plan_fingerprint != _task(store, before, "shop").plan_fingerprint
    table, column = PUT[change]
    with target.engine.connect() as conn:
        left = conn.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE {column} = '{SUBJECT}'"
        ).scalar()
        customers = conn.exec_driver_sql("SELECT count(*) FROM customers").scalar()
    assert (left, customers) == (0, 2)
    now = plans.peek("shop", "tenant")
    assert now is not None
    assert now[1] != kept[1]  # the worker keeps the new plan from now on


# --- submit and dispatch ---------------------------------------------------------------------


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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


@pytest.mark.parametrize("store", STORES, indirect=True)
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


# --- not watching results --------------------------------------------------------------------


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


# --- the worker finalizes, and announces from the rows it wrote -------------------------------


def _drain_events() -> list[dict[str, Any]]:
    events = []
    with app.connection_for_read() as conn:
        queue = EVENTS_QUEUE(conn.default_channel)
        queue.declare()  # type: ignore[no-untyped-call]  # kombu is untyped here
        while (message := queue.get(no_ack=True, accept=["json"])) is not None:  # type: ignore[no-untyped-call]
            events.append(message.decode())
    return events


@pytest.fixture
def worker(
    store: JobStore, registry: Registry, targets: Targets, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Resources]:
    """This process's resources as a worker holds them, its targets the test's shops."""
    for service in ("shop", "billing"):
        url = targets.engines[service].url.render_as_string(hide_password=False)
        monkeypatch.setenv(f"{service.upper()}_URL", url)
    res = Resources(settings=_settings(), registry=registry, store=store)
    use_resources(res)
    yield res
    reset_resources()


def _deliver(job_id: str, service: str) -> dict[str, Any]:
    """Run ``eraser.erase_service`` here, as a worker would for one message; its result.
    (Not ``get()``: once an embedded worker has run in this process, as the demo's test
    does, Celery refuses a blocking ``get()`` here.)"""
    run = erase_service.apply(args=(job_id, service))
    assert run.successful(), run.traceback
    result: dict[str, Any] = run.result
    return result


def _finished_events(store: JobStore, job_id: str) -> list[AuditEvent]:
    with store.transaction() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.job_id == job_id, AuditEvent.kind == "job.finished"
                )
            )
        )


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_the_last_task_finalizes_and_announces_the_job(
    store: JobStore, registry: Registry, targets: Targets, worker: Resources
) -> None:
    job_id = _submit(store, registry, "shop", "billing", subject=SUBJECT)
    _drain_events()

    first = _deliver(job_id, "shop")
    assert _job(store, job_id).status == "pending"  # billing is open: not finalized yet
    last = _deliver(job_id, "billing")

    assert (first["status"], last["status"]) == ("succeeded", "succeeded")
    job = _job(store, job_id)
    assert (job.status, job.total_rows) == ("succeeded", 42)
    assert job.finished_at is not None
    [event] = _drain_events()
    assert event["services"] == {
        "billing": {"status": "succeeded", "rows": 2, "verified": True},
        "shop": {"status": "succeeded", "rows": 40, "verified": True},
    }
    assert (event["job_id"], event["status"], event["total_rows"]) == (job_id, "succeeded", 42)
    assert datetime.fromisoformat(event["finished_at"]) == job.finished_at
    # The event built in finalize's transaction is the one built afresh from the store.
    fresh = completion_event(store, registry, job_id)
    assert fresh is not None
    assert {**event, "finished_at": None} == {**fresh, "finished_at": None}
    assert len(_finished_events(store, job_id)) == 1
    # The chord body finalizing once more changes nothing and announces nothing.
    assert finalize(store, job_id, in_worker=True) == "succeeded"
    assert _drain_events() == []
    assert len(_finished_events(store, job_id)) == 1


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_a_job_with_nothing_to_erase_is_finished_by_its_only_task(
    store: JobStore, registry: Registry, targets: Targets, worker: Resources
) -> None:
    job_id = _submit(store, registry, "shop")
    _drain_events()

    result = _deliver(job_id, "shop")

    assert result == {"job_id": job_id, "service": "shop", "status": "succeeded", "total_rows": 0}
    job = _job(store, job_id)
    assert (job.status, job.total_rows, job.finished_at is not None) == ("succeeded", 0, True)
    assert worker.plans.peek("shop", "tenant") is not None  # the worker's cache served
    [event] = _drain_events()
    assert (event["status"], event["services"]) == (
        "succeeded",
        {"shop": {"status": "succeeded", "rows": 0, "verified": True}},
    )
    assert _history(store, job_id, "shop") == [(1, "succeeded")]
