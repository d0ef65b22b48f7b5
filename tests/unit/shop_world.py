"""The world of the fast-path tests: a shop of twenty customers (half of them the
subject's) and sixty orders, a billing of four invoices, the in-process broker emptied
before and after each test, and readers of attempts and of the statements an engine
sends. The job store and the registry are ``job_world``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.messages import ErasureRequest
from models.registry import Registry
from models.settings import Settings
from models.store.database import JobStore
from models.store.tables import Attempt, Task, utcnow
from tasks.erase import execute_task
from tasks.events import EVENTS_QUEUE
from tasks.execution import Delivery, Outcome
from tasks.queues import Queue
from tasks.submit import (
    submit,
)
from tests.unit.job_world import (
    QUEUE,
    Targets,
    _attempts,
    _make_billing,
    _make_shop,
    _settings,
)
from worker.app import app
from worker.service import PlanCache

#: A subject that no target holds: every task of its jobs has nothing to erase.
NOBODY = "nobody-0c41"


TARGETS = [
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture
def broker_emptied(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
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


@pytest.fixture
def targets(registry: Registry, tmp_path: Path) -> Iterator[Targets]:
    """shop: 20 customers (half of them SUBJECT's) and 60 orders; billing: 4 invoices."""
    shop = _make_shop(tmp_path / "shop.db", customers=20, orders=60)
    billing = _make_billing(tmp_path / "billing.db")
    result = Targets(registry, {"shop": shop, "billing": billing})
    yield result
    for engine in result.engines.values():
        engine.dispose()


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
