"""``/metrics``: job-store figures that move when a job runs (SQLite, no broker)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from api.http import create_app
from api.metrics import DURATION_BUCKETS
from models import migrate
from models.messages import ErasureRequest
from models.registry import Registry, load_registry
from models.settings import Settings
from models.store.database import JobStore
from models.store.tables import Task
from tasks.erase import execute_task
from tasks.finalize import finalize
from tasks.submit import submit
from worker.database import create_engine


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[JobStore, Registry, sa.Engine]]:
    (tmp_path / "services.toml").write_text(
        '[subjects.tenant]\ncolumn = "tenant_id"\n[services.shop]\nurl_env = "SHOP_URL"\n',
        encoding="utf-8",
    )
    conn = sqlite3.connect(tmp_path / "shop.db")
    conn.executescript(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY,"
        " customer_id INTEGER NOT NULL REFERENCES customers(id));"
    )
    conn.executemany("INSERT INTO customers VALUES (?, ?)", [(i, 1 + i % 2) for i in range(10)])
    conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i % 10) for i in range(30)])
    conn.commit()
    conn.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    shop = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    yield JobStore(engine), load_registry(tmp_path / "services.toml"), shop
    engine.dispose()
    shop.dispose()


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_move_when_a_job_runs(setup: tuple[JobStore, Registry, sa.Engine]) -> None:
    store, registry, shop = setup
    settings = Settings()
    api = create_app(settings, store, registry, metrics_cache_seconds=0)

    def get(path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url="http://eraser") as client:
                return await client.get(path)

        return asyncio.run(call())

    before = get("/metrics")
    assert before.status_code == 200
    assert sample(before.text, 'eraser_jobs{status="succeeded"}') == 0

    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="1"))
    outcome = execute_task(store, registry, settings, job.id, "shop", engine_for=lambda _s: shop)
    assert outcome.result.status == "succeeded"
    finalize(store, job.id)

    after = get("/metrics").text
    assert sample(after, 'eraser_jobs{status="succeeded"}') == 1
    assert sample(after, 'eraser_tasks{service="shop",status="succeeded"}') == 1
    assert (
        sample(
            after, 'eraser_rows_erased_total{action="delete",service="shop",table="main.orders"}'
        )
        == 15
    )
    assert (
        sample(
            after, 'eraser_rows_erased_total{action="delete",service="shop",table="main.customers"}'
        )
        == 5
    )
    assert sample(after, 'eraser_task_attempts_total{outcome="succeeded",service="shop"}') == 1
    assert sample(after, 'eraser_task_duration_seconds_count{service="shop"}') == 1
    assert sample(after, 'eraser_dead_letters{state="open"}') == 0


def test_task_durations_are_a_histogram_from_10_ms_to_10_min(
    setup: tuple[JobStore, Registry, sa.Engine],
) -> None:
    store, registry, shop = setup
    settings = Settings()
    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="1"))
    execute_task(store, registry, settings, job.id, "shop", engine_for=lambda _s: shop)
    finalize(store, job.id)
    # A task that took 45 s: in the 60 s bucket and above, not in the 30 s one.
    with store.transaction() as session:
        task = session.scalars(sa.select(Task).where(Task.job_id == job.id)).one()
        assert task.started_at is not None
        task.finished_at = task.started_at + timedelta(seconds=45)
    api = create_app(settings, store, registry, metrics_cache_seconds=0)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://eraser") as client:
            return await client.get("/metrics")

    text = asyncio.run(call()).text
    assert "# TYPE eraser_task_duration_seconds histogram" in text
    buckets = [
        sample(text, f'eraser_task_duration_seconds_bucket{{le="{bound}",service="shop"}}')
        for bound in (*(str(b) for b in DURATION_BUCKETS), "+Inf")
    ]
    assert DURATION_BUCKETS[0] == 0.01
    assert DURATION_BUCKETS[-1] == 600
    assert buckets == [0.0] * 7 + [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert sample(text, 'eraser_task_duration_seconds_count{service="shop"}') == 1
    assert sample(text, 'eraser_task_duration_seconds_sum{service="shop"}') == 45
