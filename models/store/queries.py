"""Named reads of the job store: what the API, the CLI and the metrics ask of it.

Each function takes an open session (the caller's ``JobStore.transaction()``) and
explicit arguments, and returns mapped rows or plain figures; none commits. Callers
build no SQL of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from models.store.tables import Attempt, DeadLetter, Job, Task, TaskStatus


@dataclass(frozen=True)
class JobPosition:
    """Where a page of jobs (newest first) ended: the last job's creation time and id."""

    created_at: datetime
    job_id: str


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    #: Where the next page starts; None on the last page.
    next_after: JobPosition | None


def _with_tasks(query: sa.Select[Job]) -> sa.Select[Job]:
    """Load the tasks and their attempts with the jobs (a job view shows both), in two
    queries rather than two per job."""
    return query.options(orm.selectinload(Job.tasks).selectinload(Task.history))


def get_job(session: orm.Session, job_id: str) -> Job | None:
    """The job with its tasks and their attempts, or None."""
    return session.scalar(_with_tasks(sa.select(Job).where(Job.id == job_id)))


def list_jobs(
    session: orm.Session,
    *,
    limit: int,
    status: str | None = None,
    subject_kind: str | None = None,
    service: str | None = None,
    created_after: datetime | None = None,
    after: JobPosition | None = None,
) -> JobPage:
    """Jobs newest first (ties by id), filtered, ``limit`` at most, starting after
    ``after``. New jobs sort before any position already handed out, so paging on
    while jobs arrive neither repeats nor skips one. ``service``: jobs with a task
    for that service (an index look-up per job: tasks are unique by job and service)."""
    query = _with_tasks(sa.select(Job)).order_by(Job.created_at.desc(), Job.id.desc())
    if status is not None:
        query = query.where(Job.status == status)
    if subject_kind is not None:
        query = query.where(Job.subject_kind == subject_kind)
    if service is not None:
        query = query.where(sa.exists().where(Task.job_id == Job.id, Task.service == service))
    if created_after is not None:
        query = query.where(Job.created_at > created_after)
    if after is not None:
        query = query.where(
            sa.or_(
                Job.created_at < after.created_at,
                sa.and_(Job.created_at == after.created_at, Job.id < after.job_id),
            )
        )
    jobs = list(session.scalars(query.limit(limit + 1)))
    if len(jobs) <= limit:
        return JobPage(jobs, None)
    last = jobs[limit - 1]
    return JobPage(jobs[:limit], JobPosition(last.created_at, last.id))


def get_dead_letter(session: orm.Session, letter_id: int) -> DeadLetter | None:
    return session.get(DeadLetter, letter_id)


def list_dead_letters(
    session: orm.Session,
    *,
    limit: int,
    job_id: str | None = None,
    include_replayed: bool = False,
) -> list[DeadLetter]:
    """Dead letters newest first; replayed ones only when asked."""
    query = sa.select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if job_id is not None:
        query = query.where(DeadLetter.job_id == job_id)
    if not include_replayed:
        query = query.where(DeadLetter.replayed_at.is_(None))
    return list(session.scalars(query))


def task_history(session: orm.Session, job_id: str, service: str) -> list[Attempt]:
    """Every execution of one (job, service) task, oldest first."""
    return list(
        session.scalars(
            sa.select(Attempt)
            .join(Task, Task.id == Attempt.task_id)
            .where(Task.job_id == job_id, Task.service == service)
            .order_by(Attempt.id)
        )
    )


def ping(session: orm.Session) -> None:
    """Raise unless the job store answers a trivial query."""
    session.execute(sa.select(sa.literal(1)))


# --- aggregates for the metrics ---------------------------------------------------------------


def jobs_by_status(session: orm.Session) -> dict[str, int]:
    rows = session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status))
    return {str(status): int(count) for status, count in rows}


def tasks_by_service_and_status(session: orm.Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        sa.select(Task.service, Task.status, sa.func.count()).group_by(Task.service, Task.status)
    )
    return [(str(service), str(status), int(count)) for service, status, count in rows]


@dataclass(frozen=True)
class FinishedTask:
    """A task of a real (not dry-run) erasure that succeeded."""

    service: str
    #: ``[{"table": ..., "action": ..., "rows": N}, ...]``
    tables: Sequence[dict[str, Any]]
    started_at: datetime | None
    finished_at: datetime | None


def finished_erasure_tasks(session: orm.Session) -> list[FinishedTask]:
    rows = session.execute(
        sa.select(Task.service, Task.rows, Task.started_at, Task.finished_at)
        .join(Job, Job.id == Task.job_id)
        .where(Task.status == TaskStatus.SUCCEEDED, Job.dry_run.is_(False))
    )
    return [FinishedTask(s, tables or [], start, end) for s, tables, start, end in rows]


def attempts_by_service_and_outcome(session: orm.Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        sa.select(Task.service, Attempt.outcome, sa.func.count())
        .join(Task, Task.id == Attempt.task_id)
        .group_by(Task.service, Attempt.outcome)
    )
    return [(str(service), str(outcome), int(count)) for service, outcome, count in rows]


def dead_letter_counts(session: orm.Session) -> tuple[int, int]:
    """(open, replayed) dead letters."""
    total, replayed = session.execute(
        sa.select(sa.func.count(), sa.func.count(DeadLetter.replayed_at))
    ).one()
    return int(total) - int(replayed), int(replayed)
