"""The worker that ends a job's last task finalizes the job and announces it, from the
rows it has just written (``tasks.erase``, ``tasks.finalize``, ``tasks.events``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from models.registry import Registry
from models.store.database import JobStore
from models.store.tables import AuditEvent
from tasks.erase import erase_service
from tasks.events import EVENTS_QUEUE, completion_event
from tasks.finalize import finalize
from tasks.resources import Resources, reset_resources, use_resources
from tests.unit import shop_world
from tests.unit.job_world import (
    SUBJECT,
    Targets,
    _job,
    _settings,
)
from tests.unit.shop_world import (
    _history,
    _submit,
)
from worker.app import app

pytestmark = pytest.mark.usefixtures("broker_emptied")

#: This world's targets: twenty customers in shop, half of them the subject's.
targets = shop_world.targets
#: This world's broker, emptied before and after each test.
broker_emptied = shop_world.broker_emptied


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
