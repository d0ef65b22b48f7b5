"""Jobs made directly through the store's operations, for the tests of those
operations, and readers of the rows they leave."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from models.messages import ErasureRequest
from models.store.database import JobStore
from models.store.submission import create_job
from models.store.tables import Attempt, AuditEvent, Job, Task, utcnow


def new_job(
    store: JobStore,
    *services: str,
    dispatched: bool = False,
    key: str | None = None,
    owner: str | None = None,
) -> str:
    """A committed job over ``services`` (``shop`` when none); its id."""
    request = ErasureRequest(
        subject_kind="tenant",
        subject_value="acme-1",
        services=list(services or ["shop"]),
        idempotency_key=key,
    )
    with store.transaction() as session:
        job = create_job(
            session,
            request,
            sorted(set(request.services)),
            seal=store.seal,
            deadline_at=utcnow() + timedelta(hours=1),
            dispatched_at=utcnow() if dispatched else None,
            owner=owner,
        )
        return job.id


def task_of(store: JobStore, job_id: str, service: str = "shop") -> Task:
    with store.transaction() as session:
        task = session.scalar(sa.select(Task).where(Task.job_id == job_id, Task.service == service))
        assert task is not None
        return task


def job_of(store: JobStore, job_id: str) -> Job:
    with store.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def set_task(store: JobStore, job_id: str, service: str = "shop", **values: Any) -> None:
    with store.transaction() as session:
        session.execute(
            sa.update(Task).where(Task.job_id == job_id, Task.service == service).values(**values)
        )


def outcomes_of(store: JobStore, job_id: str, service: str = "shop") -> list[str]:
    with store.transaction() as session:
        return list(
            session.scalars(
                sa.select(Attempt.outcome)
                .join(Task, Task.id == Attempt.task_id)
                .where(Task.job_id == job_id, Task.service == service)
                .order_by(Attempt.id)
            )
        )


def audit_kinds(store: JobStore, job_id: str) -> list[str]:
    with store.transaction() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent.kind)
                .where(AuditEvent.job_id == job_id)
                .order_by(AuditEvent.id)
            )
        )
