"""Finalizing (``tasks.finalize`` over ``models.store.finalizing``): a job's status from
its tasks' statuses, and a task run then finalized into the job's totals.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from models.messages import ErasureRequest, JobView
from models.registry import Registry
from models.settings import Settings, service_url
from models.store.database import JobStore
from models.store.finalizing import job_status
from models.store.tables import AuditEvent, Job, JobStatus, Task, TaskStatus
from tasks.erase import execute_task
from tasks.finalize import finalize
from tasks.submit import submit
from tests.unit import ghost_world
from worker.database import create_engine

#: This world's registry: a shop, and a service whose URL is never set.
registry = ghost_world.registry
shop = ghost_world.shop


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
