"""The job store's named reads, on SQLite: pages that break ties by id, filters, dead
letters, a task's history, the metrics' aggregates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from models import migrate
from models.messages import ErasureRequest
from models.registry import Registry, load_registry
from models.store import queries
from models.store.database import JobStore
from models.store.tables import Attempt, DeadLetter, Job, JobStatus, Task, TaskStatus
from tasks.submit import submit
from worker.database import create_engine

REGISTRY = """
[subjects.tenant]
column = "tenant_id"
[services.shop]
url_env = "SHOP_URL"
[services.crm]
url_env = "CRM_URL"
"""
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    yield JobStore(engine)
    engine.dispose()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    (tmp_path / "services.toml").write_text(REGISTRY, encoding="utf-8")
    return load_registry(tmp_path / "services.toml")


def new_job(store: JobStore, registry: Registry, value: str = "1") -> str:
    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value=value))
    return job.id


def fail(store: JobStore, job_id: str, service: str, letter: bool = True) -> int | None:
    """Mark one task failed (and the job failed), with a dead letter when asked."""
    with store.transaction() as session:
        session.execute(
            sa.update(Task)
            .where(Task.job_id == job_id, Task.service == service)
            .values(status=TaskStatus.FAILED, error="boom", attempts=3, retries=2)
        )
        session.execute(sa.update(Job).where(Job.id == job_id).values(status=JobStatus.FAILED))
        if not letter:
            return None
        row = DeadLetter(job_id=job_id, service=service, reason="permanent", error="e", attempts=3)
        session.add(row)
        session.flush()
        return row.id


def test_pages_break_ties_of_creation_time_by_id(store: JobStore, registry: Registry) -> None:
    ids = [new_job(store, registry, str(i)) for i in range(5)]
    with store.transaction() as session:
        session.execute(sa.update(Job).values(created_at=AT))  # all at the same instant
    seen: list[str] = []
    after = None
    while True:
        with store.transaction() as session:
            page = queries.list_jobs(session, limit=2, after=after)
            seen += [j.id for j in page.jobs]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(ids, reverse=True)


def test_list_jobs_filters(store: JobStore, registry: Registry) -> None:
    old, new = new_job(store, registry, "1"), new_job(store, registry, "2")
    with store.transaction() as session:
        session.execute(sa.update(Job).where(Job.id == old).values(created_at=AT))
    with store.transaction() as session:
        after = queries.list_jobs(session, limit=10, created_after=AT + timedelta(seconds=1))
        assert [j.id for j in after.jobs] == [new]
        assert queries.list_jobs(session, limit=10, status="succeeded").jobs == []
        job = queries.get_job(session, old)
        assert job is not None
        assert [t.service for t in job.tasks] == ["crm", "shop"]
        assert queries.get_job(session, "nope") is None


def test_list_jobs_filters_by_service_in_the_query_and_pages_on(
    store: JobStore, registry: Registry
) -> None:
    """Jobs with a task for the service, pages of ``limit`` full ones (the filter is in
    the query, not applied to a page after it was read), to the last page."""
    crm_only = []
    for i in range(7):
        services = ["crm"] if i % 2 else ["shop"]
        job, _ = submit(
            store,
            registry,
            ErasureRequest(subject_kind="tenant", subject_value=str(i), services=services),
        )
        if i % 2:
            crm_only.append(job.id)
    with store.transaction() as session:
        session.execute(sa.update(Job).values(created_at=AT))  # ties broken by id
    pages: list[list[str]] = []
    after = None
    while True:
        with store.transaction() as session:
            page = queries.list_jobs(session, limit=2, service="crm", after=after)
            pages.append([j.id for j in page.jobs])
            assert all(j.services == ["crm"] for j in page.jobs)
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == [sorted(crm_only, reverse=True)[i : i + 2] for i in (0, 2)]
    with store.transaction() as session:
        assert queries.list_jobs(session, limit=10, service="nowhere").jobs == []
        both = queries.list_jobs(session, limit=10, service="shop", status="pending")
        assert len(both.jobs) == 4


def test_dead_letters_history_and_aggregates(store: JobStore, registry: Registry) -> None:
    job_id = new_job(store, registry)
    first = fail(store, job_id, "shop")
    with store.transaction() as session:
        task = session.scalars(sa.select(Task).where(Task.service == "shop")).one()
        session.add_all(
            [
                Attempt(task_id=task.id, number=1, lease_id="a", outcome="retry"),
                Attempt(task_id=task.id, number=2, lease_id="b", outcome="failed"),
            ]
        )
        session.add(
            DeadLetter(
                job_id=job_id,
                service="crm",
                reason="poison",
                error="e",
                attempts=1,
                replayed_at=AT,
                replayed_by="cli",
            )
        )
    with store.transaction() as session:
        assert [d.id for d in queries.list_dead_letters(session, limit=10)] == [first]
        assert len(queries.list_dead_letters(session, limit=10, include_replayed=True)) == 2
        assert queries.list_dead_letters(session, limit=10, job_id="other") == []
        letter = queries.get_dead_letter(session, first or 0)
        assert letter is not None
        assert letter.service == "shop"
        history = queries.task_history(session, job_id, "shop")
        assert [(a.number, a.outcome) for a in history] == [(1, "retry"), (2, "failed")]
        assert queries.jobs_by_status(session) == {"failed": 1}
        assert sorted(queries.tasks_by_service_and_status(session)) == [
            ("crm", "pending", 1),
            ("shop", "failed", 1),
        ]
        assert sorted(queries.attempts_by_service_and_outcome(session)) == [
            ("shop", "failed", 1),
            ("shop", "retry", 1),
        ]
        assert queries.dead_letter_counts(session) == (1, 1)
        assert queries.finished_erasure_tasks(session) == []
        queries.ping(session)
