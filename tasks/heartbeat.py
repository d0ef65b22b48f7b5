"""The heartbeat of a running execution: a thread that keeps the task's lease alive
while the engine runs, carries the counts of committed batches into the job store,
and notices when another execution took the task over (the run then stops at the
next batch boundary, so two executions never erase side by side)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from models.erasure import TableOutcome
from models.store.database import JobStore
from models.store.leases import Lease, heartbeat
from models.store.progress import as_outcomes
from worker.executor import Progress

log = logging.getLogger("eraser.erase")


class LeaseLost(Exception):
    """Another execution took the task over."""


@dataclass
class Heartbeat:
    """Keeps the lease alive from a thread while the engine runs, and carries progress
    (the counts of committed batches) into the job store with each beat."""

    store: JobStore
    lease: Lease
    interval: float
    report_state: Callable[[int], None] | None
    _counts: dict[str, int] = field(default_factory=dict)
    _total: int = 0
    _lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_state: float = 0.0

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="eraser-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def progress(self, p: Progress) -> None:
        """The engine's progress callback (after every committed batch)."""
        self._counts = dict(p.rows_by_table)
        self._total = p.total_rows
        if self._lost.is_set():
            raise LeaseLost()
        now = time.monotonic()
        if self.report_state is not None and now - self._last_state >= max(self.interval, 0.5):
            self._last_state = now
            self.report_state(p.total_rows)

    def tables(self) -> list[TableOutcome]:
        """What the committed batches of this execution removed so far."""
        return as_outcomes(self._counts)

    def _run(self) -> None:
        while not self._stop.wait(max(self.interval, 0.2)):
            try:
                with self.store.transaction(durable=False) as session:
                    counts, total = dict(self._counts), self._total
                    if not heartbeat(
                        session, self.lease.task_id, self.lease.lease_id, counts, total
                    ):
                        self._lost.set()
                        return
            except Exception as exc:  # a job-store hiccup: try again next beat
                log.warning("heartbeat not written: %s", type(exc).__name__)
