"""The job store's tables and the enums of their status columns: jobs, their
per-service tasks, each task's executions, dead letters and the audit trail. The
schema is created and changed by Alembic migrations (``models/migrations``), never by
``create_all``; these classes describe it for the ORM and for the migrations.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobStatus(StrEnum):
    """Where a job stands. Terminal: succeeded, partially_failed, failed, cancelled."""

    #: Committed, not dispatched to the workers yet (the reaper dispatches it if the
    #: submitter could not).
    PENDING = "pending"
    #: Dispatched: its tasks are queued or running, not every one has finished.
    RUNNING = "running"
    #: Every task finished and verified that nothing of the subject remains.
    SUCCEEDED = "succeeded"
    #: Some tasks succeeded, some failed: retry the failed ones.
    PARTIALLY_FAILED = "partially_failed"
    #: Every task failed (or was cancelled after a failure).
    FAILED = "failed"
    #: Cancelled with no task failed: the tasks that had not started never ran; any
    #: that had already finished keep their outcome (and their rows) on the job.
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


class TaskStatus(StrEnum):
    """Where one (job, service) task stands."""

    #: Waiting for a worker.
    PENDING = "pending"
    #: A worker is erasing (or between two time slices); its heartbeat moves while
    #: a worker holds it.
    RUNNING = "running"
    #: A transient error stopped the last attempt; a retry is due at ``retry_at``.
    RETRYING = "retrying"
    #: Done, and the final count found nothing of the subject.
    SUCCEEDED = "succeeded"
    #: Gave up: the error says why; the rows it removed stay removed.
    FAILED = "failed"
    #: Cancelled before it started.
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database: SQLite returns naive values,
    which are UTC here (every value written is ``utcnow()``)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


#: ``Job.owner`` of the jobs no API key submitted (CLI, embedded, plain Celery).
NO_OWNER = ""


class Job(Base):
    __tablename__ = "eraser_jobs"
    #: An idempotency key names one job per owner: two API keys never share one.
    __table_args__ = (
        sa.UniqueConstraint(
            "owner", "idempotency_key", name="uq_eraser_jobs_owner_idempotency_key"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    subject_kind: Mapped[str] = mapped_column(sa.String(64))
    #: The subject's value, sealed (a Fernet token, ``models.store.sealing``): here
    #: and only here (never in task arguments or logs). NULL once purged: when the job
    #: succeeds or is cancelled, or a retention period after it failed.
    subject_value: Mapped[str | None] = mapped_column(sa.Text)
    #: The subject's keyed hash (HMAC-SHA256 of ``kind:value`` under the pepper): what
    #: the certificate states, kept after the value is purged.
    subject_hash: Mapped[str | None] = mapped_column(sa.String(80))
    services: Mapped[list[Any]] = mapped_column(sa.JSON)
    dry_run: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The API key id that submitted the job; ``NO_OWNER`` (not NULL, so the unique
    #: constraint holds for them too) for the CLI, embedded and plain-Celery requests.
    owner: Mapped[str] = mapped_column(
        sa.String(64), default=NO_OWNER, server_default=sa.text("''")
    )
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200))
    #: Keyed hash (HMAC under the pepper) of the request, so a reused idempotency key
    #: with another body is detected without keeping a guessable digest.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    requested_by: Mapped[str | None] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(32), default=JobStatus.PENDING, index=True)
    total_rows: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Past this, the reaper fails whatever is still unfinished (with a reason).
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Succeeded, not a dry run, and no service held a row of the subject: a typo in
    #: the value looks like this, so it is an outcome of its own.
    nothing_matched: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    #: When the subject's value was purged (NULL while it is kept).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tasks: Mapped[list[Task]] = relationship(
        back_populates="job", order_by="Task.service", cascade="all, delete-orphan"
    )


class Task(Base):
    __tablename__ = "eraser_tasks"
    __table_args__ = (sa.UniqueConstraint("job_id", "service"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("eraser_jobs.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(32), default=TaskStatus.PENDING, index=True)
    #: Executions started (time slices, retries and redeliveries each count).
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: Transient failures since the task was (re)queued; past the limit: dead letter.
    retries: Mapped[int] = mapped_column(sa.Integer, default=0, server_default=sa.text("0"))
    #: Executions that never ended (the worker died); past the limit: poison message.
    crashes: Mapped[int] = mapped_column(sa.Integer, default=0, server_default=sa.text("0"))
    #: The execution that holds the task now (NULL between executions).
    lease_id: Mapped[str | None] = mapped_column(sa.String(36))
    #: When the last message for this task went to the broker.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When a retrying task's retry is due.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: ``[{"table": ..., "action": ..., "rows": N}, ...]`` from the engine's report.
    rows: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    total_rows: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: False when an execution died (or lost its connection mid-commit) without a
    #: ledger in the target: ``rows`` and ``total_rows`` are then a lower bound.
    counts_exact: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    #: With ``counts_exact`` false: the most rows the task can have removed (None: no
    #: bound is known).
    rows_at_most: Mapped[int | None] = mapped_column(sa.BigInteger)
    verified: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    plan_fingerprint: Mapped[str | None] = mapped_column(sa.String(80))
    #: Succeeded (not a dry run) with every count 0: the service held nothing of the
    #: subject.
    nothing_matched: Mapped[bool] = mapped_column(
        sa.Boolean, default=False, server_default=sa.false()
    )
    error: Mapped[str | None] = mapped_column(sa.Text)
    celery_id: Mapped[str | None] = mapped_column(sa.String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    job: Mapped[Job] = relationship(back_populates="tasks")
    history: Mapped[list[Attempt]] = relationship(
        order_by="Attempt.id", cascade="all, delete-orphan", back_populates="task"
    )


class AttemptOutcome(StrEnum):
    """How one execution of a task ended."""

    #: Still executing (or the worker died and nobody has noticed yet).
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: A transient error; a retry was scheduled.
    RETRY = "retry"
    #: The time slice ended; the work continues in a new delivery.
    SLICED = "sliced"
    #: The worker died during this execution (found by the next one, or the reaper).
    LOST = "lost"
    #: Another execution held the task or the subject's lock; tried again later.
    BUSY = "busy"


class Attempt(Base):
    """One execution of a task: the job's history keeps every one."""

    __tablename__ = "eraser_task_attempts"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(
        sa.ForeignKey("eraser_tasks.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    lease_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    celery_id: Mapped[str | None] = mapped_column(sa.String(64))
    worker: Mapped[str | None] = mapped_column(sa.String(200))
    outcome: Mapped[str] = mapped_column(sa.String(32), default=AttemptOutcome.RUNNING)
    error: Mapped[str | None] = mapped_column(sa.Text)
    rows: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: ``{"table:action": rows}`` committed by this execution so far (kept with each
    #: heartbeat, so the counts of an execution that dies are not lost).
    tables: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    #: The last ledger row (``worker.execution.ledger``) that ``tables`` holds. None:
    #: this execution keeps no ledger in the target; -1 (``progress.SETTLED``): its
    #: counts were settled from the ledger once it ended.
    ledger_seq: Mapped[int | None] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    task: Mapped[Task] = relationship(back_populates="history")


class DeadLetter(Base):
    """A task that failed for good: what went wrong, for an operator to read and replay."""

    __tablename__ = "eraser_dead_letters"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("eraser_jobs.id", ondelete="CASCADE"), index=True
    )
    service: Mapped[str] = mapped_column(sa.String(64))
    #: ``permanent``, ``retries_exhausted``, ``poison`` or ``deadline``.
    reason: Mapped[str] = mapped_column(sa.String(32))
    error: Mapped[str] = mapped_column(sa.Text)
    #: Frames only (file, line, function): exception messages can quote row data.
    traceback: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer)
    celery_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replayed_by: Mapped[str | None] = mapped_column(sa.String(200))


class AuditEvent(Base):
    __tablename__ = "eraser_audit_events"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    kind: Mapped[str] = mapped_column(sa.String(64))
    #: Who did it: an API key id, ``cli``, ``worker`` (never a secret).
    actor: Mapped[str] = mapped_column(sa.String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
