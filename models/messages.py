"""Messages that cross a boundary: erasure requests and task results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from models.store.tables import Job


def _refuse_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here rather than by the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: A string without NUL characters (every text a request carries).
Text = Annotated[str, AfterValidator(_refuse_nul)]


class ErasureRequest(BaseModel):
    """What an upstream service asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_kind: Text = Field(min_length=1, max_length=64)
    subject_value: Text = Field(min_length=1, max_length=1000)
    #: Registry services to erase from; empty means every service of the kind.
    services: list[Text] = Field(default_factory=list)
    dry_run: bool = False
    idempotency_key: Text | None = Field(default=None, min_length=1, max_length=200)
    requested_by: Text | None = Field(default=None, max_length=200)
    reason: Text | None = Field(default=None, max_length=2000)


class TaskResult(BaseModel):
    """What ``eraser.erase_service`` returns to the chord: small, deterministic, and free
    of subject data (no timestamps, no values, no DSNs)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    service: str
    status: str
    total_rows: int = 0


class AttemptView(BaseModel):
    """One execution of a task (``eraser status --json``'s ``history``)."""

    number: int
    outcome: str
    error: str | None
    rows: int
    started_at: datetime
    finished_at: datetime | None


class TaskView(BaseModel):
    service: str
    status: str
    attempts: int
    #: Transient failures retried since the task was last (re)queued.
    retries: int = 0
    #: Executions lost with their worker.
    crashes: int = 0
    rows: int
    #: False: an execution died (or lost its connection mid-commit) with no ledger in
    #: the target, so ``rows`` and ``tables`` are a lower bound (docs/jobs.md).
    counts_exact: bool = True
    #: With ``counts_exact`` false: the most rows the task can have removed (None:
    #: no bound is known).
    rows_at_most: int | None = None
    verified: bool
    #: Succeeded (not a dry run) and the service held no row of the subject.
    nothing_matched: bool = False
    error: str | None
    tables: list[dict[str, Any]]
    history: list[AttemptView] = Field(default_factory=list)


class JobView(BaseModel):
    """A job as ``eraser status --json`` and the API show it: no subject value."""

    id: str
    status: str
    subject_kind: str
    dry_run: bool
    total_rows: int
    #: Every task's counts are exact (see ``TaskView.counts_exact``).
    counts_exact: bool = True
    #: Succeeded, not a dry run, and no service held a row of the subject: nothing
    #: was erased because nothing matched (a mistyped value looks like this).
    nothing_matched: bool = False
    #: The subject's value is no longer kept (the job ended, or its retention passed).
    subject_purged: bool = False
    created_at: datetime
    finished_at: datetime | None
    tasks: list[TaskView]

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            id=job.id,
            status=job.status,
            subject_kind=job.subject_kind,
            dry_run=job.dry_run,
            total_rows=job.total_rows,
            counts_exact=all(t.counts_exact for t in job.tasks),
            nothing_matched=job.nothing_matched,
            subject_purged=job.subject_value is None,
            created_at=job.created_at,
            finished_at=job.finished_at,
            tasks=[
                TaskView(
                    service=t.service,
                    status=t.status,
                    attempts=t.attempts,
                    retries=t.retries,
                    crashes=t.crashes,
                    rows=t.total_rows,
                    counts_exact=t.counts_exact,
                    rows_at_most=None if t.counts_exact else t.rows_at_most,
                    verified=t.verified,
                    nothing_matched=t.nothing_matched,
                    error=t.error,
                    tables=list(t.rows),
                    history=[
                        AttemptView(
                            number=a.number,
                            outcome=a.outcome,
                            error=a.error,
                            rows=a.rows,
                            started_at=a.started_at,
                            finished_at=a.finished_at,
                        )
                        for a in t.history
                    ],
                )
                for t in job.tasks
            ],
        )
