"""Purging the subject's value from the job store. A job that succeeds or is cancelled
loses it when it ends (``models.store.finalizing``); a failed or partially failed job
keeps it, sealed, so that an operator can retry it, for the retention period
(``ERASER_SUBJECT_RETENTION_DAYS``); then the reaper purges it here, and a retry of
that job is refused (``SubjectPurged``). The job's record (counts, outcome, the
subject's keyed hash, the certificate) stays."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from models.store.sealing import SubjectSeal
from models.store.tables import AuditEvent, Job, JobStatus

#: Statuses whose value outlives the job for the retention period.
KEPT_FOR_RETRY = (JobStatus.FAILED, JobStatus.PARTIALLY_FAILED)


def purge_expired_values(
    session: orm.Session, finished_before: datetime, now: datetime
) -> list[str]:
    """Purge the value of every ended job that finished before ``finished_before``
    (and of any succeeded or cancelled one still holding it); returns their ids. The
    rows are locked (those another transaction holds, e.g. a retry, are skipped: the
    next round sees them again)."""
    purgeable = sa.or_(
        Job.status.in_([s.value for s in KEPT_FOR_RETRY]) & (Job.finished_at < finished_before),
        Job.status.in_([JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value]),
    )
    ids = list(
        session.scalars(
            sa.select(Job.id)
            .where(Job.subject_value.is_not(None), purgeable)
            .order_by(Job.finished_at)
            .limit(1000)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    session.execute(sa.update(Job).where(Job.id.in_(ids)).values(subject_value=None, purged_at=now))
    session.add_all(
        AuditEvent(job_id=i, kind="job.subject_purged", actor="reaper", detail={}) for i in ids
    )
    return ids


def reseal_values(session: orm.Session, seal: SubjectSeal) -> int:
    """Seal again, under the current key, every stored value sealed under a retired
    key; returns how many changed. Key rotation: once it has run, the retired key can
    be dropped. Few values are ever stored (only those of open jobs and of failed jobs
    within their retention), so one pass does."""
    rows = session.execute(
        sa.select(Job.id, Job.subject_value)
        .where(Job.subject_value.is_not(None))
        .with_for_update(skip_locked=True)
    ).all()
    changed = 0
    for job_id, token in rows:
        if token is None or seal.sealed_under_current(token):
            continue
        session.execute(
            sa.update(Job).where(Job.id == job_id).values(subject_value=seal.reseal(token))
        )
        changed += 1
    return changed
