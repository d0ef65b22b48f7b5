"""``eraser.erase_service``: one (job, service) pair, the chord's header task.

The body is thin: load the task row by id, run ``worker.service.run_service``, record
the outcome. It *returns* failures instead of raising them: a header task that raises
keeps the chord body (``finalize_job``) from ever running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from celery import Task as CeleryTask
from sqlalchemy import orm

from models.jobstore import JobStore, Task, TaskStatus, utcnow
from models.messages import TaskResult
from models.registry import Registry
from models.settings import MissingDatabaseUrl
from tasks.resources import resources
from worker.app import app
from worker.database import describe_database_error
from worker.exceptions import EraserError
from worker.executor import Progress
from worker.service import PlanCache, run_service

log = logging.getLogger("eraser.erase")


@app.task(name="eraser.erase_service", bind=True)
def erase_service(self: CeleryTask[Any, Any], job_id: str, service: str) -> dict[str, Any]:
    res = resources()
    result = execute_task(
        res.store,
        res.registry,
        job_id,
        service,
        engine_for=res.engine_for,
        plans=res.plans,
        celery_id=self.request.id,
        heartbeat_seconds=res.settings.heartbeat_seconds,
        report_state=lambda rows: self.update_state(
            state="PROGRESS", meta={"service": service, "rows": rows}
        ),
    )
    return result.model_dump()


def execute_task(
    store: JobStore,
    registry: Registry,
    job_id: str,
    service: str,
    *,
    engine_for: Callable[[str], sa.Engine],
    plans: PlanCache | None = None,
    celery_id: str | None = None,
    heartbeat_seconds: float = 1.0,
    report_state: Callable[[int], None] | None = None,
) -> TaskResult:
    """Run one task to a terminal state and record it; never raises for a failed
    erasure (the failure is the result)."""
    # "running" may be lost in a crash without harm: the message is redelivered.
    with store.transaction(durable=False) as session:
        task = session.scalar(
            sa.select(Task)
            .where(Task.job_id == job_id, Task.service == service)
            .options(orm.joinedload(Task.job))
            .with_for_update(of=Task)
        )
        if task is None:
            return TaskResult(job_id=job_id, service=service, status="missing")
        if TaskStatus(task.status).terminal:
            # A redelivered or duplicated message: the first run's outcome stands.
            return _result(task)
        # The job row is not touched here (dispatch marked it running): the tasks of
        # one job start side by side and would queue on its row lock.
        job = task.job
        task.status = TaskStatus.RUNNING
        task.attempts += 1
        task.started_at = task.heartbeat_at = utcnow()
        task.celery_id = celery_id
        task.error = None
        kind, value, dry = job.subject_kind, job.subject_value, job.dry_run

    last_beat = 0.0

    def progress(p: Progress) -> None:
        nonlocal last_beat
        now = time.monotonic()
        if now - last_beat < heartbeat_seconds:
            return
        last_beat = now
        with store.transaction(durable=False) as session:
            session.execute(
                sa.update(Task)
                .where(Task.job_id == job_id, Task.service == service)
                .values(heartbeat_at=utcnow(), total_rows=p.total_rows)
            )
        if report_state is not None:
            report_state(p.total_rows)

    error: str | None = None
    rows: list[dict[str, Any]] = []
    total = 0
    verified = False
    fingerprint: str | None = None
    try:
        columns = registry.subject_columns(service, kind)
        engine = engine_for(service)
        report = run_service(
            engine, service, registry.services[service], kind, columns, value, dry, progress, plans
        )
        rows = [{"table": t.table, "action": t.action.value, "rows": t.rows} for t in report.tables]
        total = report.total_rows
        verified = report.verified
        fingerprint = report.schema_fingerprint
        if not dry and not verified:
            error = "verification still found rows of the subject after every pass"
    except (EraserError, MissingDatabaseUrl) as exc:
        error = str(exc)
    except sa.exc.DBAPIError as exc:
        error = describe_database_error(exc)
    except Exception as exc:
        # The message of an arbitrary exception may quote row data: name its type only.
        error = f"internal error {type(exc).__name__}"
        log.error("task %s/%s failed with %s", job_id, service, type(exc).__name__)

    status = TaskStatus.FAILED if error else TaskStatus.SUCCEEDED
    with store.transaction() as session:
        task = session.scalar(sa.select(Task).where(Task.job_id == job_id, Task.service == service))
        assert task is not None  # noqa: S101 - the row was there at the start and is never deleted
        task.status = status
        task.error = error
        task.rows = rows
        task.total_rows = total
        task.verified = verified
        task.plan_fingerprint = fingerprint
        task.finished_at = task.heartbeat_at = utcnow()
        log.info("task %s/%s %s: %d rows", job_id, service, status.value, total)
        return _result(task)


def _result(task: Task) -> TaskResult:
    return TaskResult(
        job_id=task.job_id, service=task.service, status=task.status, total_rows=task.total_rows
    )
