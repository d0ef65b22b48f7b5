"""The quick path's record: a task whose service holds nothing of the subject is
claimed and succeeded at once, in one write, provided nobody touched it since it was
read. Most tasks of a job end this way, so the statements are built once and, on
PostgreSQL, run as one prepared statement in one round trip."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from models.erasure import TableOutcome
from models.store.database import JobStore
from models.store.outcomes import listed, open_tasks
from models.store.progress import merged_rows
from models.store.tables import Attempt, AttemptOutcome, Job, Task, TaskStatus, new_id

#: Task statuses a quick execution may take over.
QUICK_STATUSES = (TaskStatus.PENDING.value, TaskStatus.RETRYING.value)


class Runner(Protocol):
    """A statement ready to run with named parameters (a prepared statement)."""

    def run(self, conn: sa.Connection, params: Mapping[str, Any]) -> sa.CursorResult[Any]: ...


#: Makes a ``Runner`` of a statement for a dialect (the worker's prepared statements).
Prepare = Callable[[sa.Select[Any], sa.Dialect], Runner]


def _param(column: sa.ColumnElement[Any], name: str | None = None) -> sa.BindParameter[Any]:
    # Not a column's own name: insert() and update() keep those for their VALUES.
    return sa.bindparam(f"q_{name or column.key}", type_=column.type)


_T = Task.__table__.c
_A = Attempt.__table__.c
#: The update of the task, with the values as parameters. The task may have moved
#: since it was read (or was not read: its job's fields were known): the update takes
#: it only if no execution holds it, it is still open, no earlier execution of it
#: removed rows, and none left counts to settle from the target's ledger (an earlier
#: execution may have removed rows its heartbeats never carried: the general path
#: settles them).
_UPDATE = (
    sa.update(Task)
    .where(
        Task.job_id == _param(_T.job_id),
        Task.service == _param(_T.service),
        Task.status.in_(listed(QUICK_STATUSES)),
        Task.lease_id.is_(None),
        Task.total_rows == 0,
        ~sa.exists().where(Attempt.task_id == Task.id, Attempt.ledger_seq >= 0),
    )
    .values(
        status=TaskStatus.SUCCEEDED,
        attempts=Task.attempts + 1,
        rows=_param(_T.rows),
        total_rows=0,
        verified=_param(_T.verified),
        # The quick path never runs a dry run: nothing here is nothing matched.
        nothing_matched=sa.true(),
        plan_fingerprint=_param(_T.plan_fingerprint),
        error=None,
        celery_id=_param(_T.celery_id),
        retry_at=None,
        heartbeat_at=_param(_T.heartbeat_at, "now"),
        started_at=sa.func.coalesce(Task.started_at, _param(_T.started_at, "started")),
        finished_at=_param(_T.finished_at, "now"),
    )
)
#: The execution's attempt row, succeeded at once.
_ATTEMPT_VALUES: dict[str, Any] = {
    "lease_id": _param(_A.lease_id),
    "celery_id": _param(_A.celery_id),
    "worker": _param(_A.worker),
    "started_at": _param(_A.started_at, "started"),
    "finished_at": _param(_A.finished_at, "now"),
    "outcome": sa.literal(AttemptOutcome.SUCCEEDED.value, _A.outcome.type),
    "rows": sa.literal(0, _A.rows.type),
    "tables": sa.literal({}, _A.tables.type),
}
_ATTEMPT = sa.insert(Attempt).values(**_ATTEMPT_VALUES)
#: How many of the job's other tasks are still open.
_OTHERS = open_tasks(_param(_T.job_id), Task.service != _param(_T.service))
_RECORDS: dict[int, Runner] = {}


def one_statement_record(dialect: sa.Dialect, prepare: Prepare) -> Runner:
    """PostgreSQL: the update, the attempt row (only if the update matched) and the
    count of the job's other open tasks as one statement, prepared once per dialect."""
    runner = _RECORDS.get(id(dialect))
    if runner is None:
        moved = _UPDATE.returning(Task.id, Task.attempts).cte("moved")
        columns = ["task_id", "number", *_ATTEMPT_VALUES]
        values = [moved.c.id, moved.c.attempts, *_ATTEMPT_VALUES.values()]
        recorded = (
            sa.insert(Attempt)
            .from_select(columns, sa.select(*values).select_from(moved))
            .returning(Attempt.id)
            .cte("recorded")
        )
        statement = sa.select(
            sa.select(sa.func.count()).select_from(recorded).scalar_subquery(),
            _OTHERS.scalar_subquery(),
        )
        runner = _RECORDS[id(dialect)] = prepare(statement, dialect)
    return runner


@dataclass(frozen=True)
class QuickFields:
    """What the quick path reads of a task and its job, outside a transaction."""

    status: str
    lease_id: str | None
    total_rows: int
    subject_kind: str
    #: Sealed, as stored (None once purged).
    sealed_value: str | None
    dry_run: bool

    @property
    def untouched(self) -> bool:
        """No execution holds it or removed rows for it, and it is still open."""
        return self.lease_id is None and not self.total_rows and self.status in QUICK_STATUSES


def quick_fields(store: JobStore, job_id: str, service: str) -> QuickFields | None:
    """A plain read of the task and its job's fields, outside a transaction (the
    record re-checks the task)."""
    with store.engine.connect() as plain:
        found = (
            plain.execution_options(isolation_level="AUTOCOMMIT")
            .execute(
                sa.select(
                    Task.status,
                    Task.lease_id,
                    Task.total_rows,
                    Job.subject_kind,
                    Job.subject_value.label("sealed_value"),
                    Job.dry_run,
                )
                .join(Job, Job.id == Task.job_id)
                .where(Task.job_id == job_id, Task.service == service)
            )
            .first()
        )
    if found is None:
        return None
    return QuickFields(*found)


@dataclass(frozen=True)
class NothingFound:
    """One execution that found nothing of the subject in its service."""

    job_id: str
    service: str
    tables: Sequence[TableOutcome]
    verified: bool
    fingerprint: str | None
    celery_id: str | None
    worker: str | None
    started: datetime
    now: datetime


def record_nothing_found(store: JobStore, found: NothingFound, prepare: Prepare) -> bool | None:
    """Record the execution as claimed and succeeded at once. None: someone moved the
    task meanwhile, nothing was written; else whether no other task of the job is
    still open."""
    params: dict[str, Any] = {
        "q_job_id": found.job_id,
        "q_service": found.service,
        "q_rows": merged_rows([], found.tables),
        "q_verified": found.verified,
        "q_plan_fingerprint": found.fingerprint,
        "q_celery_id": found.celery_id,
        "q_worker": found.worker,
        "q_lease_id": new_id(),
        "q_started": found.started,
        "q_now": found.now,
    }
    if store.engine.dialect.name == "postgresql":
        # One statement, one round trip: the update, the attempt row (only if the
        # update matched) and the count of the job's other open tasks.
        with store.engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            row = one_statement_record(store.engine.dialect, prepare).run(conn, params).one()
        done, others = tuple(row)
        return None if done != 1 else not others
    with store.transaction() as session:
        took = session.execute(
            _UPDATE.returning(Task.id, Task.attempts).execution_options(synchronize_session=False),
            params,
        ).first()
        if took is None:
            return None
        session.execute(_ATTEMPT.values(task_id=took.id, number=took.attempts), params)
        return not session.scalar(_OTHERS, params)
