"""The job store and the plain functions behind the tasks, on SQLite (no broker):
migrations, submit, one task run, finalize."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models import migrate
from models.messages import ErasureRequest, JobView
from models.registry import Registry, load_registry
from models.settings import Settings, service_url
from models.store.database import JobStore
from models.store.finalizing import job_status
from models.store.tables import AuditEvent, Base, Job, JobStatus, Task, TaskStatus
from tasks.erase import execute_task
from tasks.finalize import finalize
from tasks.submit import IdempotencyConflict, SubmitError, submit
from worker.database import create_engine

REGISTRY = """
[subjects.tenant]
column = "tenant_id"

[services.shop]
url_env = "SHOP_URL"

[services.ghost]
url_env = "GHOST_URL_NOT_SET"
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    yield JobStore(engine)
    engine.dispose()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    path = tmp_path / "services.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    return load_registry(path)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[sa.Engine]:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id));
        """
    )
    conn.executemany("INSERT INTO customers VALUES (?, ?)", [(i, 1 + i % 2) for i in range(20)])
    conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i % 20) for i in range(60)])
    conn.commit()
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def test_migrations_are_idempotent_and_match_the_models(store: JobStore) -> None:
    migrate.upgrade(store.engine)  # a second run changes nothing
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_submit_creates_the_job_and_its_tasks(store: JobStore, registry: Registry) -> None:
    job, created = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="1"))
    assert created
    with store.transaction() as session:
        saved = session.get(Job, job.id)
        assert saved is not None
        assert saved.status == JobStatus.PENDING
        assert [t.service for t in saved.tasks] == ["ghost", "shop"]
        assert session.scalar(sa.select(AuditEvent.kind)) == "job.submitted"


def test_idempotency_key(store: JobStore, registry: Registry) -> None:
    request = ErasureRequest(subject_kind="tenant", subject_value="1", idempotency_key="k")
    first, created = submit(store, registry, request)
    again, created_again = submit(store, registry, request)
    assert created
    assert not created_again
    assert again.id == first.id
    other = request.model_copy(update={"subject_value": "2"})
    with pytest.raises(IdempotencyConflict, match=first.id):
        submit(store, registry, other)


def test_a_service_named_twice_is_the_same_request(store: JobStore, registry: Registry) -> None:
    """``submit`` makes one task of a service named twice, so the key's fingerprint must
    not tell the two requests apart (it answered 409 to the same job)."""
    once = ErasureRequest(
        subject_kind="tenant", subject_value="1", services=["shop", "ghost"], idempotency_key="k"
    )
    first, _ = submit(store, registry, once)
    twice = once.model_copy(update={"services": ["shop", "ghost", "shop"]})
    again, created = submit(store, registry, twice)
    assert (again.id, created) == (first.id, False)
    with pytest.raises(IdempotencyConflict, match=first.id):
        submit(store, registry, once.model_copy(update={"services": ["shop"]}))


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"subject_kind": "user"}, "unknown subject kind (known: tenant)"),
        ({"services": ["billing"]}, "a requested service is not registered"),
    ],
)
def test_submit_refuses_unknown_kinds_and_services(
    store: JobStore, registry: Registry, request_args: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"subject_kind": "tenant", "subject_value": "1", **request_args}
    with pytest.raises(SubmitError, match=re.escape(message)):
        submit(store, registry, ErasureRequest.model_validate(args))


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["succeeded", "succeeded"], JobStatus.SUCCEEDED),  # all done
        (["succeeded", "failed"], JobStatus.PARTIALLY_FAILED),  # some failed
        (["failed", "failed"], JobStatus.FAILED),  # all failed
        (["failed", "cancelled"], JobStatus.FAILED),  # nothing succeeded
        (["cancelled", "cancelled"], JobStatus.CANCELLED),  # cancelled before running
        (["pending", "pending"], JobStatus.PENDING),  # not started
        (["succeeded", "running"], JobStatus.RUNNING),  # under way
        (["succeeded", "pending"], JobStatus.RUNNING),  # under way
    ],
)
def test_job_status_from_task_statuses(statuses: list[str], expected: JobStatus) -> None:
    assert job_status([TaskStatus(s) for s in statuses]) is expected


def test_a_task_run_and_finalize(store: JobStore, registry: Registry, shop: sa.Engine) -> None:
    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="1"))

    def engine_for(service: str) -> sa.Engine:
        if service == "shop":
            return shop
        return create_engine(service_url(registry.services[service].url_env))

    settings = Settings()
    ok = execute_task(store, registry, settings, job.id, "shop", engine_for=engine_for).result
    bad = execute_task(store, registry, settings, job.id, "ghost", engine_for=engine_for)
    assert (ok.status, ok.total_rows) == ("succeeded", 40)  # 10 customers, 30 orders
    assert bad.result.status == "failed"
    assert bad.finished  # a missing URL is permanent: no retry
    assert bad.dead_letter_id is not None
    # A redelivered message does not run the task again.
    again = execute_task(store, registry, settings, job.id, "shop", engine_for=engine_for)
    assert again.result == ok

    assert finalize(store, job.id) == JobStatus.PARTIALLY_FAILED
    assert finalize(store, job.id) == JobStatus.PARTIALLY_FAILED  # idempotent
    with store.transaction() as session:
        saved = session.get(Job, job.id)
        assert saved is not None
        view = JobView.of(saved)
        finished = session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.kind == "job.finished")
        )
        attempts = {t.service: t.attempts for t in session.scalars(sa.select(Task))}
    assert finished == 1
    assert attempts == {"shop": 1, "ghost": 1}
    assert view.total_rows == 40
    tasks = {t.service: t for t in view.tasks}
    assert tasks["ghost"].error == (
        "environment variable GHOST_URL_NOT_SET (the service's database URL) is not set"
    )
    assert {(r["table"], r["rows"]) for r in tasks["shop"].tables} == {
        ("main.orders", 30),
        ("main.customers", 10),
    }
