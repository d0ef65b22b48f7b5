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
from models.store.leases import Lease, heartbeat, holds, keeps_no_ledger
from models.store.progress import as_outcomes
from worker.execution.options import Progress

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
    #: The counts of committed batches, their total and the ledger seq they reach,
    #: replaced together (the thread reads one consistent snapshot).
    _counted: tuple[dict[str, int], int, int | None] = ({}, 0, None)
    _lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_state: float = 0.0
    #: The engine said the target keeps this execution's ledger.
    _ledgered: bool = False

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
        self._counted = (dict(p.rows_by_table), p.total_rows, p.ledger_seq)
        if self._lost.is_set():
            raise LeaseLost()
        now = time.monotonic()
        if self.report_state is not None and now - self._last_state >= max(self.interval, 0.5):
            self._last_state = now
            self.report_state(p.total_rows)

    def tables(self) -> list[TableOutcome]:
        """What the committed batches of this execution removed so far."""
        return as_outcomes(self._counted[0])

    def ledger_seq(self) -> int | None:
        """The seq of the last ledger row ``tables()`` includes (0: none written yet;
        None: no ledger)."""
        seq = self._counted[2]
        if seq is None and self._ledgered:
            return 0
        return seq

    def ledger_ready(self, active: bool) -> None:
        """The engine's word, before its first batch, on whether the target keeps the
        ledger: without one, the attempt says so at once (a crash then leaves the
        counts inexact)."""
        self._ledgered = active
        if not active:
            with self.store.transaction() as session:
                keeps_no_ledger(session, self.lease.lease_id)

    def check_held(self) -> None:
        """Raise ``LeaseLost`` unless this execution still holds its task (asked of
        the job store, not of the last beat)."""
        if self._lost.is_set():
            raise LeaseLost()
        with self.store.transaction(durable=False) as session:
            if not holds(session, self.lease.task_id, self.lease.lease_id):
                self._lost.set()
                raise LeaseLost()

    def _run(self) -> None:
        while not self._stop.wait(max(self.interval, 0.2)):
            try:
                with self.store.transaction(durable=False) as session:
                    counts, total, seq = self._counted
                    lease = self.lease
                    if not heartbeat(session, lease.task_id, lease.lease_id, counts, total, seq):
                        self._lost.set()
                        return
            except Exception as exc:  # a job-store hiccup: try again next beat
                log.warning("heartbeat not written: %s", type(exc).__name__)
