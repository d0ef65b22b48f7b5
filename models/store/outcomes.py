"""Recording how an execution ended: its attempt row closed with an outcome, the
task's counts and status, and whether the job has any other task still open (the
execution that ends the last one finalizes the job)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from models.erasure import TableOutcome
from models.messages import TaskResult
from models.store.progress import add_rows, counts_of
from models.store.tables import Attempt, AttemptOutcome, Task, TaskStatus, utcnow


@dataclass(frozen=True)
class Counted:
    """What an execution's own counts (``tables``) reach: the seq of its last ledger
    row they include (None: it kept no ledger)."""

    tables: Sequence[TableOutcome]
    ledger_seq: int | None


def listed(values: Sequence[str]) -> list[sa.ColumnElement[str]]:
    """Status values written into the statement (a statement to prepare has no
    lists expanded at run time)."""
    return [sa.literal(v, Task.status.type) for v in values]


def open_tasks(
    job_id: str | sa.BindParameter[Any], others: sa.ColumnElement[bool]
) -> sa.Select[int]:
    """How many of the job's tasks matching ``others`` are still open."""
    terminal = [s.value for s in TaskStatus if s.terminal]
    return (
        sa.select(sa.func.count())
        .select_from(Task)
        .where(Task.job_id == job_id, others, Task.status.not_in(listed(terminal)))
    )


def others_open(session: orm.Session, task: Task) -> int:
    """How many other tasks of ``task``'s job are open (one statement, in the
    transaction that just ended ``task``)."""
    session.flush()
    return session.scalar(open_tasks(task.job_id, Task.id != task.id)) or 0


def task_result(task: Task) -> TaskResult:
    """The task's state as a header task's result."""
    return TaskResult(
        job_id=task.job_id, service=task.service, status=task.status, total_rows=task.total_rows
    )


def matched_nothing(task: Task, dry_run: bool) -> bool:
    """No dry run, and every count of the task is 0: the service held nothing of the
    subject (before this job or any earlier attempt removed something)."""
    return not dry_run and not task.total_rows and all(not r.get("rows") for r in task.rows or [])


def end_attempt(
    session: orm.Session,
    lease_id: str,
    outcome: AttemptOutcome,
    rows: int,
    error: str | None = None,
    counted: Counted | None = None,
) -> None:
    """Close the attempt row of the execution holding ``lease_id``; with ``counted``,
    keep the counts added to the task for it and the ledger seq they reach (its
    watermark: ``progress.settle`` folds any later ledger row)."""
    values: dict[str, Any] = {
        "outcome": outcome,
        "rows": rows,
        "error": error,
        "finished_at": utcnow(),
    }
    if counted is not None:
        values["tables"] = counts_of(counted.tables)
        values["ledger_seq"] = counted.ledger_seq
    session.execute(sa.update(Attempt).where(Attempt.lease_id == lease_id).values(**values))


def record_success(
    session: orm.Session,
    task: Task,
    lease_id: str,
    tables: Sequence[TableOutcome],
    *,
    removed: int,
    verified: bool,
    fingerprint: str | None,
    dry_run: bool = False,
    ledger_seq: int | None = None,
) -> None:
    """The execution finished the task: counts added, ``succeeded``, lease released;
    ``nothing_matched`` when it was no dry run and no table had a row to act on."""
    add_rows(task, tables, removed)
    task.nothing_matched = matched_nothing(task, dry_run)
    task.status = TaskStatus.SUCCEEDED
    task.error = None
    task.verified = verified
    task.plan_fingerprint = fingerprint
    task.lease_id = None
    task.finished_at = task.heartbeat_at = utcnow()
    counted = Counted(tables, ledger_seq)
    end_attempt(session, lease_id, AttemptOutcome.SUCCEEDED, removed, counted=counted)


def record_slice(
    session: orm.Session,
    task: Task,
    lease_id: str,
    tables: Sequence[TableOutcome],
    removed: int,
    ledger_seq: int | None = None,
) -> int:
    """The execution's time slice ended with work left: counts added, lease released,
    the task queued for its next slice; returns the slice's rows."""
    done = add_rows(task, tables, removed)
    task.lease_id = None
    task.queued_at = utcnow()
    end_attempt(session, lease_id, AttemptOutcome.SLICED, done, counted=Counted(tables, ledger_seq))
    return done
