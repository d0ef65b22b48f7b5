"""Executions, retries, dead letters and the reaper, on the plain functions behind the
Celery tasks: ``execute_task``, ``retry_job``/``replay_dead_letter`` and ``reap``.

The job store is SQLite (a PostgreSQL job store too where SQLite hits a known bug), the
targets are SQLite shops, and the broker is Celery's in-process ``memory://`` transport:
messages that the code under test sends go nowhere, and every assertion reads the job
store's rows (statuses, attempts, dead letters, audit events) and the targets' rows.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models import migrate
from models.messages import ErasureRequest
from models.registry import Registry, load_registry
from models.settings import Settings, service_url
from models.store.database import JobStore
from models.store.tables import (
    Attempt,
    AuditEvent,
    DeadLetter,
    Job,
    JobStatus,
    Task,
    TaskStatus,
    utcnow,
)
from tasks.erase import execute_task
from tasks.execution import Delivery, Outcome
from tasks.finalize import finalize, finalize_if_done
from tasks.queues import Queue
from tasks.reaper import REAPER_LOCK_KEY, ReapReport, reap
from tasks.retry_policy import backoff
from tasks.submit import RetryRefused, dispatch, replay_dead_letter, retry_job, submit
from tests.conftest import make_db
from worker.app import app
from worker.database import create_engine
from worker.exceptions import SubjectLocked
from worker.service import PlanCache

REGISTRY = """
[subjects.tenant]
column = "tenant_id"

[services.shop]
url_env = "SHOP_URL"
batch_size = 50

[services.billing]
url_env = "BILLING_URL"
batch_size = 50

[services.legacy]
url_env = "LEGACY_URL"
[services.legacy.tables.no_such_table]
action = "delete"
"""

SUBJECT = "acme-5b1e9"
OTHER = "globex-77"
QUEUE = "eraser"
#: A PostgreSQL URL nobody listens on: every connection is refused at once (transient).
REFUSED_URL = "postgresql://x@127.0.0.1:1/db"

_NAIVE = (
    "a SQLite job store returns naive datetimes and the code mixes them with the aware "
    "utcnow(): TypeError"
)
#: Tests that meet a lease left by another execution: ``models.store.leases.claim_task`` computes
#: ``now - task.heartbeat_at``.
LEASE_STORES = [
    pytest.param(
        "sqlite",
    ),
    pytest.param("postgresql", marks=pytest.mark.postgres),
]
#: Tests that retry a job: ``models.store.retries.requeue_failed_tasks`` computes
#: ``max(job.deadline_at, ...)``.
RETRY_STORES = [
    pytest.param(
        "sqlite",
    ),
    pytest.param("postgresql", marks=pytest.mark.postgres),
]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_process_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the tests alone, and messages go to the in-process broker,
    emptied afterwards so that no later test's worker receives them."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"ERASER_{name.upper()}", raising=False)
    for variable in ("SHOP_URL", "BILLING_URL", "LEGACY_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert app.conf.broker_url.startswith("memory://"), "these tests need the in-process broker"
    yield
    with app.connection_for_write() as conn:
        for queue in (QUEUE, Queue.DEAD_LETTER.value):
            conn.default_channel.queue_purge(queue)


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A migrated job store: SQLite unless the test asks for ``postgresql``."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        migrate.upgrade(engine)
        yield JobStore(engine)
        engine.dispose()
        return
    for db in make_db(backend, tmp_path):
        migrate.upgrade(db.engine)
        yield JobStore(db.engine)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    path = tmp_path / "services.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    return load_registry(path)


def _make_shop(path: Path, customers: int, orders: int) -> sa.Engine:
    """Customers alternate between the subject and another tenant; orders reference them."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id));
        """
    )
    tenants = (SUBJECT, OTHER)
    conn.executemany(
        "INSERT INTO customers VALUES (?, ?)", [(i, tenants[i % 2]) for i in range(customers)]
    )
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?)", [(i, i % customers) for i in range(orders)]
    )
    conn.commit()
    conn.close()
    return create_engine(f"sqlite:///{path}")


def _make_billing(path: Path, invoices: int = 4) -> sa.Engine:
    """One table that nothing references; invoices alternate between the two tenants."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL)")
    tenants = (SUBJECT, OTHER)
    conn.executemany(
        "INSERT INTO invoices VALUES (?, ?)", [(i, tenants[i % 2]) for i in range(invoices)]
    )
    conn.commit()
    conn.close()
    return create_engine(f"sqlite:///{path}")


@dataclass
class Targets:
    """``engine_for``: the test's engines by service; any other service's URL comes from
    its environment variable, as in a worker."""

    registry: Registry
    engines: dict[str, sa.Engine] = field(default_factory=dict)

    def __call__(self, service: str) -> sa.Engine:
        if service not in self.engines:
            self.engines[service] = create_engine(
                service_url(self.registry.services[service].url_env)
            )
        return self.engines[service]


@pytest.fixture
def targets(registry: Registry, tmp_path: Path) -> Iterator[Targets]:
    shop = _make_shop(tmp_path / "shop.db", customers=20, orders=60)
    billing = _make_billing(tmp_path / "billing.db")
    result = Targets(registry, {"shop": shop, "billing": billing})
    yield result
    for engine in result.engines.values():
        engine.dispose()


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "max_retries": 2,
        "retry_backoff_seconds": 0.01,
        "retry_backoff_max_seconds": 0.02,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --- helpers ---------------------------------------------------------------------------------


def _submit(store: JobStore, registry: Registry, *services: str) -> str:
    request = ErasureRequest(
        subject_kind="tenant", subject_value=SUBJECT, services=list(services or ["shop"])
    )
    job, created = submit(store, registry, request)
    assert created
    return job.id


def _run(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    job_id: str,
    service: str,
    targets: Targets,
    delivery: Delivery | None = None,
    plans: PlanCache | None = None,
) -> Outcome:
    return execute_task(
        store, registry, settings, job_id, service, delivery, engine_for=targets, plans=plans
    )


def _task(store: JobStore, job_id: str, service: str) -> Task:
    with store.transaction() as session:
        task = session.scalar(sa.select(Task).where(Task.job_id == job_id, Task.service == service))
        assert task is not None
        return task


def _job(store: JobStore, job_id: str) -> Job:
    with store.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _update_task(store: JobStore, job_id: str, service: str, **values: Any) -> None:
    with store.transaction() as session:
        session.execute(
            sa.update(Task).where(Task.job_id == job_id, Task.service == service).values(**values)
        )


def _update_job(store: JobStore, job_id: str, **values: Any) -> None:
    with store.transaction() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(**values))


def _attempts(store: JobStore, job_id: str, service: str) -> list[Attempt]:
    with store.transaction() as session:
        return list(
            session.scalars(
                sa.select(Attempt)
                .join(Task, Task.id == Attempt.task_id)
                .where(Task.job_id == job_id, Task.service == service)
                .order_by(Attempt.id)
            )
        )


def _outcomes(store: JobStore, job_id: str, service: str) -> list[str]:
    return [a.outcome for a in _attempts(store, job_id, service)]


def _letters(store: JobStore, job_id: str) -> list[DeadLetter]:
    with store.transaction() as session:
        return list(
            session.scalars(
                sa.select(DeadLetter).where(DeadLetter.job_id == job_id).order_by(DeadLetter.id)
            )
        )


def _events(store: JobStore, job_id: str, kind: str) -> list[AuditEvent]:
    with store.transaction() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent)
                .where(AuditEvent.job_id == job_id, AuditEvent.kind == kind)
                .order_by(AuditEvent.id)
            )
        )


def _hold_lease(
    store: JobStore,
    job_id: str,
    service: str,
    *,
    age_seconds: float,
    celery_id: str = "c-old",
    tables: dict[str, int] | None = None,
) -> None:
    """Make the task look held by an execution that beat ``age_seconds`` ago, its last
    heartbeat having carried ``tables`` (``{"table:action": rows}``)."""
    beat = utcnow() - timedelta(seconds=age_seconds)
    with store.transaction() as session:
        task = session.scalar(sa.select(Task).where(Task.job_id == job_id, Task.service == service))
        assert task is not None
        task.status = TaskStatus.RUNNING
        task.lease_id = "lease-of-the-other-execution"
        task.heartbeat_at = beat
        task.celery_id = celery_id
        task.attempts = 1
        session.add(
            Attempt(
                task_id=task.id,
                number=1,
                lease_id="lease-of-the-other-execution",
                celery_id=celery_id,
                started_at=beat,
                tables=tables or {},
                rows=sum((tables or {}).values()),
            )
        )


def _count_by_tenant(engine: sa.Engine, sql: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {str(tenant): int(n) for tenant, n in conn.exec_driver_sql(sql)}


def _tenant_rows(engine: sa.Engine) -> dict[str, dict[str, int]]:
    """Rows per tenant in the shop: customers, and orders through their customer."""
    return {
        "customers": _count_by_tenant(
            engine, "SELECT tenant_id, count(*) FROM customers GROUP BY tenant_id"
        ),
        "orders": _count_by_tenant(
            engine,
            "SELECT c.tenant_id, count(*) FROM orders o "
            "JOIN customers c ON c.id = o.customer_id GROUP BY c.tenant_id",
        ),
    }


def _invoices(engine: sa.Engine) -> dict[str, int]:
    """Invoices per tenant in the billing database."""
    return _count_by_tenant(engine, "SELECT tenant_id, count(*) FROM invoices GROUP BY tenant_id")


def _rows_by_table(task: Task) -> dict[str, int]:
    return {str(r["table"]): int(r["rows"]) for r in task.rows}


# --- one execution -------------------------------------------------------------------------


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


# --- leases ----------------------------------------------------------------------------------


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


@pytest.mark.parametrize("store", LEASE_STORES, indirect=True)
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


@pytest.mark.parametrize("store", LEASE_STORES, indirect=True)
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


@pytest.mark.parametrize("store", LEASE_STORES, indirect=True)
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


@pytest.mark.parametrize("store", LEASE_STORES, indirect=True)
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


@pytest.mark.parametrize("store", LEASE_STORES, indirect=True)
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


# --- faults ----------------------------------------------------------------------------------


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


# --- retrying a job --------------------------------------------------------------------------


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


@pytest.mark.parametrize("store", RETRY_STORES, indirect=True)
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


@pytest.mark.parametrize("store", RETRY_STORES, indirect=True)
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


# --- the reaper ------------------------------------------------------------------------------


def _reap(
    store: JobStore, registry: Registry, depth: int | None = 0, **settings: Any
) -> ReapReport:
    return reap(store, registry, _settings(**settings), queue_depth=lambda _queue: depth)


def _dispatched(store: JobStore, registry: Registry, *services: str) -> str:
    job_id = _submit(store, registry, *services)
    assert dispatch(store, registry, job_id, QUEUE)
    return job_id


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
@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
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


@pytest.mark.parametrize(
    "store", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_one_reaper_round_at_a_time(store: JobStore, registry: Registry) -> None:
    job_id = _dispatched(store, registry)
    _update_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED)
    # Another beat replica is in the middle of a round.
    with store.engine.connect() as other:
        other.execute(sa.select(sa.func.pg_advisory_lock(REAPER_LOCK_KEY)))
        try:
            skipped = _reap(store, registry)
        finally:
            other.execute(sa.select(sa.func.pg_advisory_unlock(REAPER_LOCK_KEY)))
            other.commit()

    assert not skipped.ran
    assert not skipped.acted
    assert _job(store, job_id).status == "running"
    assert _reap(store, registry).finalized == [job_id]
