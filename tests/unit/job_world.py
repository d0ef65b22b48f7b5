"""The world the tests of tasks and of the job store run in: a migrated job store
(SQLite unless a test asks for ``postgresql``), a registry of three services, SQLite
target shops, the in-process ``memory://`` broker (emptied after each test), and
readers of the rows every assertion is about (statuses, attempts, dead letters, audit
events, the targets' rows).
"""

from __future__ import annotations

import sqlite3
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
    Task,
    TaskStatus,
    utcnow,
)
from tasks.erase import execute_task
from tasks.execution import Delivery, Outcome
from tasks.queues import Queue
from tasks.reaper import ReapReport, reap
from tasks.submit import dispatch, submit
from tests.conftest import make_db
from worker.app import app
from worker.database import create_engine
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


@pytest.fixture
def in_process_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
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


@pytest.fixture(name="store")
def store_on_postgresql(tmp_path: Path) -> Iterator[JobStore]:
    """A migrated PostgreSQL job store: the same tests again, in ``tests/integration``."""
    for db in make_db("postgresql", tmp_path):
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


def _reap(
    store: JobStore, registry: Registry, depth: int | None = 0, **settings: Any
) -> ReapReport:
    return reap(store, registry, _settings(**settings), queue_depth=lambda _queue: depth)


def _dispatched(store: JobStore, registry: Registry, *services: str) -> str:
    job_id = _submit(store, registry, *services)
    assert dispatch(store, registry, job_id, QUEUE)
    return job_id
