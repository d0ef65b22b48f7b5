"""Prometheus metrics, read from the job store and the broker at scrape time.

The job store is the source of truth, so any process with access to it (``eraser
api`` serves ``/metrics``) reports the same figures, and no metric is lost when a
worker restarts. Families:

- ``eraser_jobs{status}``, ``eraser_tasks{service,status}``: how many, by status;
- ``eraser_rows_erased_total{service,table,action}``: rows removed (or anonymized,
  nullified) by finished erasures, dry runs excluded;
- ``eraser_task_attempts_total{service,outcome}``: executions by outcome (``retry``,
  ``lost``, ``sliced``, ...); ``eraser_task_retries_total{service}`` the retries;
- ``eraser_task_duration_seconds{service}``: first start to finish of finished tasks
  (a summary: ``_sum`` and ``_count``);
- ``eraser_dead_letters{state}``: open and replayed dead letters;
- ``eraser_queue_messages{queue}`` waiting on the broker and
  ``eraser_queue_reserved{queue}`` delivered to a worker but not yet acknowledged
  (Redis), which queue-length autoscalers miss.

Nothing here carries a subject value or a DSN. Expose ``/metrics`` inside the cluster
only (it has no authentication, as Prometheus expects).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from models.registry import Registry
from models.store.database import JobStore
from models.store.tables import Attempt, DeadLetter, Job, JobStatus, Task, TaskStatus
from tasks.queues import Queue, all_queues
from worker.app import app

log = logging.getLogger("eraser.metrics")


class JobStoreCollector(Collector):
    """Collects at scrape time; results are reused for ``cache_seconds``."""

    def __init__(
        self, store: JobStore, registry: Registry, default_queue: str, cache_seconds: float = 5.0
    ) -> None:
        self.store = store
        self.registry = registry
        self.queues = [*all_queues(registry, default_queue), Queue.DEAD_LETTER.value]
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Any]] | None = None

    def collect(self) -> Iterator[Any]:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_seconds:
                yield from self._cached[1]
                return
            families = list(self._families())
            self._cached = (time.monotonic(), families)
        yield from families

    def _families(self) -> Iterable[Any]:
        jobs = GaugeMetricFamily("eraser_jobs", "Jobs by status", labels=["status"])
        tasks = GaugeMetricFamily(
            "eraser_tasks", "Tasks by service and status", labels=["service", "status"]
        )
        rows = CounterMetricFamily(
            "eraser_rows_erased",
            "Rows removed, anonymized or nullified by finished erasures",
            labels=["service", "table", "action"],
        )
        attempts = CounterMetricFamily(
            "eraser_task_attempts", "Task executions by outcome", labels=["service", "outcome"]
        )
        retries = CounterMetricFamily(
            "eraser_task_retries", "Transient failures retried", labels=["service"]
        )
        durations = SummaryMetricFamily(
            "eraser_task_duration_seconds",
            "First start to finish of finished tasks",
            labels=["service"],
        )
        letters = GaugeMetricFamily("eraser_dead_letters", "Dead letters", labels=["state"])
        with self.store.transaction(durable=False) as session:
            by_status = dict(
                session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all()
            )
            for status in JobStatus:
                jobs.add_metric([status.value], float(by_status.get(status.value, 0)))
            task_counts = session.execute(
                sa.select(Task.service, Task.status, sa.func.count()).group_by(
                    Task.service, Task.status
                )
            ).all()
            for service, task_status, count in task_counts:
                tasks.add_metric([service, str(task_status)], float(count))
            erased: Counter[tuple[str, str, str]] = Counter()
            spent: dict[str, list[float]] = {}
            finished = session.execute(
                sa.select(Task.service, Task.rows, Task.started_at, Task.finished_at)
                .join(Job, Job.id == Task.job_id)
                .where(Task.status == TaskStatus.SUCCEEDED, Job.dry_run.is_(False))
            )
            for service, table_rows, started, ended in finished:
                for entry in table_rows or []:
                    erased[(service, str(entry["table"]), str(entry["action"]))] += int(
                        entry["rows"]
                    )
                if started is not None and ended is not None:
                    spent.setdefault(service, []).append((ended - started).total_seconds())
            for (service, table, action), count in sorted(erased.items()):
                rows.add_metric([service, table, action], float(count))
            for service, seconds in sorted(spent.items()):
                durations.add_metric([service], count_value=len(seconds), sum_value=sum(seconds))
            outcome_counts = session.execute(
                sa.select(Task.service, Attempt.outcome, sa.func.count())
                .join(Task, Task.id == Attempt.task_id)
                .group_by(Task.service, Attempt.outcome)
            ).all()
            retried: Counter[str] = Counter()
            for service, outcome, count in outcome_counts:
                attempts.add_metric([service, outcome], float(count))
                if outcome == "retry":
                    retried[service] += int(count)
            for service in sorted(self.registry.services):
                retries.add_metric([service], float(retried.get(service, 0)))
            open_letters = session.scalar(
                sa.select(sa.func.count())
                .select_from(DeadLetter)
                .where(DeadLetter.replayed_at.is_(None))
            )
            all_letters = session.scalar(sa.select(sa.func.count()).select_from(DeadLetter))
        letters.add_metric(["open"], float(open_letters or 0))
        letters.add_metric(["replayed"], float((all_letters or 0) - (open_letters or 0)))
        yield from (jobs, tasks, rows, attempts, retries, durations, letters)
        yield from self._queue_families()

    def _queue_families(self) -> Iterable[Any]:
        waiting = GaugeMetricFamily(
            "eraser_queue_messages", "Messages waiting on the broker", labels=["queue"]
        )
        reserved = GaugeMetricFamily(
            "eraser_queue_reserved",
            "Messages delivered to a worker, not yet acknowledged",
            labels=["queue"],
        )
        try:
            with app.connection_for_read() as conn:
                channel = conn.default_channel
                size = getattr(channel, "_size", None)
                for queue in self.queues:
                    if size is not None:
                        waiting.add_metric([queue], float(size(queue)))
                unacked = _reserved_by_queue(channel)
                if unacked is not None:
                    for queue in self.queues:
                        reserved.add_metric([queue], float(unacked.get(queue, 0)))
        except Exception as exc:  # the broker is down: the job-store figures still count
            log.warning("broker metrics unavailable: %s", type(exc).__name__)
            return
        yield from (waiting, reserved)


def _reserved_by_queue(channel: Any) -> Counter[str] | None:
    """Redis keeps delivered, unacknowledged messages in a hash (``unacked``), each
    stored with the routing key it was sent with (our queues are named after it)."""
    client = getattr(channel, "client", None)
    key = getattr(channel, "unacked_key", None)
    if client is None or key is None:
        return None
    counts: Counter[str] = Counter()
    for raw in client.hvals(key):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        counts[str(routing_key)] += 1
    return counts
