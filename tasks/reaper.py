"""The reaper: brings every job to a true terminal state whatever the broker lost.

One round (``reap()``; ``eraser beat`` runs one every few seconds) does, from the job
store alone:

1. **outbox**: dispatches jobs committed but never dispatched (the submitter died
   between the commit and the send, or the broker was down);
2. **stale leases**: a task whose execution stopped beating (its worker died) loses
   its lease; it is sent again, or dead-lettered as a poison message after too many
   crashes;
3. **lost messages**: a task waiting for a message that is no longer anywhere (a
   pending task whose queue is empty, a retry long overdue, Redis flushed) is sent
   again. A duplicate is harmless: an execution finds the task done or held;
4. **lost chords**: a job whose tasks are all terminal but which is not final (the
   chord counter was lost) is finalized;
5. **deadlines**: whatever is unfinished past the job's deadline fails, with a reason;
6. **retention**: the subject's value of a job that failed more than
   ``subject_retention_days`` ago is purged (``models.store.purging``).

Several beat replicas may run at once: a round runs only while holding a lock in the
job store (a PostgreSQL advisory lock); the others skip that round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kombu.entity import Queue as KombuQueue

from models.registry import Registry
from models.settings import Settings
from models.store.database import JobStore
from models.store.dead_letters import DeadLetterReason
from models.store.faults import fail_task, poison_error
from models.store.leases import lose_lease
from models.store.purging import purge_expired_values
from models.store.reaping import (
    REAPER_LOCK_KEY,
    expired_jobs,
    fail_unfinished,
    idle_task,
    jobs_to_finalize,
    overdue_tasks,
    reaper_lock,
    requeue,
    stale_leases,
    undispatched_jobs,
)
from models.store.tables import utcnow
from tasks.deadletter import publish_dead_letter
from tasks.finalize import finalize
from tasks.queues import queue_for
from tasks.submit import dispatch, send_task
from worker.app import app
from worker.planning.model import REMOVING

__all__ = ["REAPER_LOCK_KEY", "ReapReport", "reap", "run_forever"]

log = logging.getLogger("eraser.reaper")


@dataclass
class ReapReport:
    """What one round did (ids only)."""

    ran: bool = True
    dispatched: list[str] = field(default_factory=list)
    requeued: list[tuple[str, str]] = field(default_factory=list)
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    #: Jobs whose subject value was purged (retention passed).
    purged: list[str] = field(default_factory=list)
    #: (job, service, dead letter id, Celery id) of the letters to publish.
    letters: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    @property
    def acted(self) -> bool:
        return bool(
            self.dispatched
            or self.requeued
            or self.dead_lettered
            or self.finalized
            or self.expired
            or self.purged
        )


QueueDepth = Callable[[str], int | None]


def reap(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    *,
    queue_depth: QueueDepth | None = None,
) -> ReapReport:
    """One reaper round; returns what it did (``ran`` False when another replica held
    the lock)."""
    depth = queue_depth or broker_queue_depth
    with reaper_lock(store) as held:
        if not held:
            return ReapReport(ran=False)
        report = ReapReport()
        now = utcnow()
        _expire(store, settings, now, report)
        _outbox(store, registry, settings, now, report)
        _stale_leases(store, registry, settings, now, report)
        _lost_messages(store, registry, settings, now, depth, report)
        _lost_chords(store, report)
        _retention(store, settings, now, report)
    for job_id, service, letter, celery_id in report.letters:
        publish_dead_letter(job_id, service, letter, celery_id)
    if report.acted:
        log.info(
            "reaper: dispatched %d, requeued %d, dead-lettered %d, finalized %d, expired %d, "
            "purged %d",
            len(report.dispatched),
            len(report.requeued),
            len(report.dead_lettered),
            len(report.finalized),
            len(report.expired),
            len(report.purged),
        )
    return report


def run_forever(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    *,
    rounds: int | None = None,
    on_round: Callable[[ReapReport], None] | None = None,
) -> None:
    """``eraser beat``: a reaper round every ``reaper_interval_seconds``."""
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        try:
            report = reap(store, registry, settings)
            if on_round is not None:
                on_round(report)
        except Exception as exc:  # a job-store or broker outage: try again next round
            log.warning("reaper round failed: %s", type(exc).__name__)
        done += 1
        time.sleep(max(0.0, settings.reaper_interval_seconds - (time.monotonic() - started)))


# --- the duties ------------------------------------------------------------------------------


def _expire(store: JobStore, settings: Settings, now: datetime, report: ReapReport) -> None:
    with store.transaction() as session:
        for job in expired_jobs(session, now):
            for task, letter in fail_unfinished(session, job, now, REMOVING):
                report.dead_lettered.append((job.id, task.service))
                report.letters.append((job.id, task.service, letter, task.celery_id))
            report.expired.append(job.id)
    for job_id in report.expired:
        finalize(store, job_id)


def _outbox(
    store: JobStore, registry: Registry, settings: Settings, now: datetime, report: ReapReport
) -> None:
    cutoff = now - timedelta(seconds=settings.dispatch_grace_seconds)
    with store.transaction(durable=False) as session:
        waiting = undispatched_jobs(session, cutoff)
    for job_id in waiting:
        if dispatch(store, registry, job_id, settings.default_queue):
            report.dispatched.append(job_id)


def _stale_leases(
    store: JobStore, registry: Registry, settings: Settings, now: datetime, report: ReapReport
) -> None:
    cutoff = now - timedelta(seconds=settings.stale_after_seconds)
    resend: list[tuple[str, str]] = []
    with store.transaction() as session:
        for task in stale_leases(session, cutoff):
            lose_lease(session, task, now, "its heartbeat stopped (found by the reaper)", REMOVING)
            if task.crashes >= settings.max_crashes:
                error = poison_error(task.crashes)
                letter = fail_task(session, task, DeadLetterReason.POISON, error, None)
                report.dead_lettered.append((task.job_id, task.service))
                report.letters.append((task.job_id, task.service, letter, task.celery_id))
                continue
            requeue(session, task, now, "stale heartbeat")
            resend.append((task.job_id, task.service))
    for job_id, service in resend:
        send_task(registry, job_id, service, settings.default_queue)
        report.requeued.append((job_id, service))


def _lost_messages(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    now: datetime,
    depth: QueueDepth,
    report: ReapReport,
) -> None:
    grace = timedelta(seconds=settings.dispatch_grace_seconds)
    with store.transaction(durable=False) as session:
        candidates = overdue_tasks(session, now - grace)
    busy_queues: dict[str, bool] = {}
    for job_id, service in candidates:
        queue = queue_for(registry, service, settings.default_queue)
        if queue not in busy_queues:
            # A backlog is not a loss: while the queue still holds messages, waiting
            # tasks are probably among them.
            waiting = depth(queue)
            busy_queues[queue] = waiting is None or waiting > 0
        if busy_queues[queue]:
            continue
        with store.transaction() as session:
            task = idle_task(session, job_id, service)
            if task is None:
                continue
            requeue(session, task, now, "message lost")
        send_task(registry, job_id, service, settings.default_queue)
        report.requeued.append((job_id, service))


def _lost_chords(store: JobStore, report: ReapReport) -> None:
    with store.transaction(durable=False) as session:
        open_jobs = jobs_to_finalize(session)
    for job_id in open_jobs:
        finalize(store, job_id)
        report.finalized.append(job_id)


def _retention(store: JobStore, settings: Settings, now: datetime, report: ReapReport) -> None:
    cutoff = now - timedelta(days=settings.subject_retention_days)
    with store.transaction() as session:
        report.purged.extend(purge_expired_values(session, cutoff, now))


def broker_queue_depth(queue: str) -> int | None:
    """Messages waiting in ``queue`` on the broker (None when it cannot be asked)."""
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            size = getattr(channel, "_size", None)
            if size is not None:  # kombu's virtual transports (Redis, memory)
                return int(size(queue))
            declared = KombuQueue(queue, routing_key=queue)(channel).queue_declare(passive=True)
            return int(declared.message_count)
    except Exception:
        return None
