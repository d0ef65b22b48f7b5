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
  (a histogram, buckets from 10 ms to 10 min: ``DURATION_BUCKETS``);
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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from models.registry import Registry
from models.store import queries
from models.store.database import JobStore
from models.store.tables import AttemptOutcome, JobStatus
from tasks.queues import Queue, all_queues
from worker.app import app

log = logging.getLogger("eraser.metrics")

#: Upper bounds (seconds) of the task-duration histogram: a task of a small service
#: ends in tens of milliseconds, a large tenant's in minutes; beyond 10 min is +Inf.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


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
        with self.store.transaction(durable=False) as session:
            by_status = queries.jobs_by_status(session)
            task_counts = queries.tasks_by_service_and_status(session)
            finished = queries.finished_erasure_tasks(session)
            outcomes = queries.attempts_by_service_and_outcome(session)
            open_letters, replayed_letters = queries.dead_letter_counts(session)
        jobs = GaugeMetricFamily("eraser_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], float(by_status.get(status.value, 0)))
        tasks = GaugeMetricFamily(
            "eraser_tasks", "Tasks by service and status", labels=["service", "status"]
        )
        for service, task_status, count in task_counts:
            tasks.add_metric([service, task_status], float(count))
        letters = GaugeMetricFamily("eraser_dead_letters", "Dead letters", labels=["state"])
        letters.add_metric(["open"], float(open_letters))
        letters.add_metric(["replayed"], float(replayed_letters))
        yield from (jobs, tasks, _rows_erased(finished), *self._attempts(outcomes))
        yield _durations(finished)
        yield letters
        yield from self._queue_families()

    def _attempts(self, outcomes: list[tuple[str, str, int]]) -> Iterable[Any]:
        attempts = CounterMetricFamily(
            "eraser_task_attempts", "Task executions by outcome", labels=["service", "outcome"]
        )
        retries = CounterMetricFamily(
            "eraser_task_retries", "Transient failures retried", labels=["service"]
        )
        retried: Counter[str] = Counter()
        for service, outcome, count in outcomes:
            attempts.add_metric([service, outcome], float(count))
            if outcome == AttemptOutcome.RETRY:
                retried[service] += count
        for service in sorted(self.registry.services):
            retries.add_metric([service], float(retried.get(service, 0)))
        return attempts, retries

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


def _rows_erased(finished: list[queries.FinishedTask]) -> CounterMetricFamily:
    rows = CounterMetricFamily(
        "eraser_rows_erased",
        "Rows removed, anonymized or nullified by finished erasures",
        labels=["service", "table", "action"],
    )
    erased: Counter[tuple[str, str, str]] = Counter()
    for task in finished:
        for entry in task.tables:
            erased[(task.service, str(entry["table"]), str(entry["action"]))] += int(entry["rows"])
    for (service, table, action), count in sorted(erased.items()):
        rows.add_metric([service, table, action], float(count))
    return rows


def _durations(finished: list[queries.FinishedTask]) -> HistogramMetricFamily:
    """First start to finish of each finished task, in ``DURATION_BUCKETS``."""
    durations = HistogramMetricFamily(
        "eraser_task_duration_seconds",
        "First start to finish of finished tasks",
        labels=["service"],
    )
    spent: dict[str, list[float]] = {}
    for task in finished:
        if task.started_at is not None and task.finished_at is not None:
            elapsed = (task.finished_at - task.started_at).total_seconds()
            spent.setdefault(task.service, []).append(elapsed)
    for service, times in sorted(spent.items()):
        # Cumulative counts per upper bound, labelled as Prometheus' own histograms are.
        cumulative = [
            (str(bound), float(sum(1 for t in times if t <= bound))) for bound in DURATION_BUCKETS
        ]
        durations.add_metric(
            [service], [*cumulative, ("+Inf", float(len(times)))], sum_value=sum(times)
        )
    return durations


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
