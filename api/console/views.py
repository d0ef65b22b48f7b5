"""What the console's pages show of a job: its API view, the subject's keyed hash (never
the value), its dead letters, and the figures of its charts."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.messages import JobView
from models.settings import Settings
from models.store import queries
from models.store.database import JobStore
from models.store.sealing import UnreadableSubject
from models.store.tables import DeadLetter, Job, JobStatus

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
    #: The keyed hash the job store keeps (HMAC of kind and value under the pepper).
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
    def counts(self) -> dict[str, dict[tuple[str, str], int]]:
        """Per service, ``(table, action) -> rows``: the counts the plan's tree shows."""
        out: dict[str, dict[tuple[str, str], int]] = {}
        for t in self.tables:
            by_table = out.setdefault(t.service, {})
            by_table[(t.table, t.action)] = by_table.get((t.table, t.action), 0) + t.rows
        return out

    @property
    def most_rows(self) -> int:
        return max((t.rows for t in self.tables), default=0)


def subject_hash(job: Job) -> str | None:
    """The keyed hash the job store keeps (never the value)."""
    return job.subject_hash


def load(store: JobStore, settings: Settings, job_id: str, *, letters: bool) -> JobPage | None:
    """The job's page data, or None; its dead letters (replayed ones too) when
    ``letters``."""
    with store.transaction(durable=False) as session:
        job = queries.get_job(session, job_id)
        if job is None:
            return None
        page = JobPage(
            JobView.of(job),
            subject_hash(job),
            job.requested_by,
            list(job.services),
        )
        if letters:
            page.letters = queries.list_dead_letters(
                session, limit=100, job_id=job_id, include_replayed=True
            )
            session.expunge_all()
        return page


@dataclass(frozen=True)
class Typed:
    """What the erase page may know of a dry run: the value only while the job store
    still holds it (a finished job's value is purged), and its keyed hash always."""

    kind: str
    value: str | None
    requested_by: str | None
    subject_hash: str | None


def typed_value(store: JobStore, job_id: str) -> Typed | None:
    """The dry run ``job_id`` as the erase page needs it, or None: for the page that
    shows the value to the operator who typed it and checks the confirmation."""
    with store.transaction(durable=False) as session:
        job = queries.get_job(session, job_id)
        if job is None:
            return None
        value = None
        if job.subject_value is not None:
            try:
                value = store.seal.open(job.subject_value)
            except UnreadableSubject:
                value = None
        return Typed(job.subject_kind, value, job.requested_by, job.subject_hash)
