"""What the console's pages show of a job: its API view, the subject's keyed hash (never
the value), its dead letters, and the figures of its charts."""

from __future__ import annotations

from dataclasses import dataclass, field

from models import certificate
from models.jobstore import DeadLetter, Job, JobStatus, JobStore
from models.messages import JobView
from models.settings import Settings
from models.store import queries

TERMINAL = frozenset(s.value for s in JobStatus if s.terminal)


@dataclass(frozen=True)
class TableRows:
    service: str
    table: str
    action: str
    rows: int


@dataclass
class JobPage:
    view: JobView
    #: HMAC of kind and value under the certificate key; None without one.
    subject_hash: str | None
    requested_by: str | None
    services: list[str]
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.view.status not in TERMINAL

    @property
    def tables(self) -> list[TableRows]:
        return [
            TableRows(t.service, str(r["table"]), str(r.get("action", "")), int(r["rows"]))
            for t in self.view.tasks
            for r in t.tables
        ]

    @property
    def most_rows(self) -> int:
        return max((t.rows for t in self.tables), default=0)


def subject_hash(settings: Settings, job: Job) -> str | None:
    if settings.certificate_key is None:
        return None
    key = settings.certificate_key.get_secret_value().encode()
    return certificate.subject_hash(key, job.subject_kind, job.subject_value)


def load(store: JobStore, settings: Settings, job_id: str, *, letters: bool) -> JobPage | None:
    """The job's page data, or None; its dead letters (replayed ones too) when
    ``letters``."""
    with store.transaction(durable=False) as session:
        job = queries.get_job(session, job_id)
        if job is None:
            return None
        page = JobPage(
            JobView.of(job),
            subject_hash(settings, job),
            job.requested_by,
            list(job.services),
        )
        if letters:
            page.letters = queries.list_dead_letters(
                session, limit=100, job_id=job_id, include_replayed=True
            )
            session.expunge_all()
        return page


def typed_value(store: JobStore, job_id: str) -> tuple[str, str, str | None] | None:
    """(kind, value, requested_by) of a job: for the erase page only, which shows the
    value to the operator who typed it and compares the confirmation with it."""
    with store.transaction(durable=False) as session:
        job = queries.get_job(session, job_id)
        if job is None:
            return None
        return job.subject_kind, job.subject_value, job.requested_by
