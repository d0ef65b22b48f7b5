"""The service side of Eraser's ``http`` protocol, without the web framework: what
Eraser asks (``ErasureRequest``), what the service answers (``ErasureResult``), and
``ErasureBook``, which runs each job's erasure once, in a background thread, and
remembers its outcome by job id.

Idempotent on the job id: a second request for a job that is running or done answers
with that erasure; one whose erasure failed, or ended unverified, starts it again; one
that asks something else under the same job id is refused (``ErasureConflict``). The
book keeps outcomes in memory (the last ``remember`` jobs): after a restart, a repeated
request runs the erasure again, which finds what is left.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("eraser_client.erasures")


@dataclass(frozen=True)
class ErasureRequest:
    """One erasure (or dry run) Eraser asks of the service."""

    job_id: str
    subject_kind: str
    subject_value: str = field(repr=False)  # never in a log line or a traceback's locals
    dry_run: bool


@dataclass(frozen=True)
class ErasureResult:
    """What the erasure removed (or a dry run would remove), per table or store, and
    whether a fresh look found nothing of the subject left."""

    counts: dict[str, int]
    verified: bool


#: The work itself: the service's own erasure of one subject.
Erase = Callable[[ErasureRequest], ErasureResult]


class ErasureConflict(Exception):
    """The job id was already used for another subject or another kind of run."""


@dataclass
class _Record:
    fingerprint: bytes
    dry_run: bool
    status: str = "running"
    result: ErasureResult | None = None
    error: str = ""
    transient: bool = False
    #: Set when the erasure ended, done or failed.
    ended: threading.Event = field(default_factory=threading.Event)
    #: Whether Eraser was answered with this run's outcome (it counted its rows then).
    reported: bool = False
    #: Rows earlier runs of the job removed that no answer told Eraser: added to this
    #: run's counts (an unverified run replaced before Eraser polled it).
    carried: dict[str, int] = field(default_factory=dict)

    def untold(self) -> dict[str, int]:
        """What this run and the runs before it removed that Eraser was not told."""
        if self.reported:
            return {}
        counts = dict(self.carried)
        for table, rows in (self.result.counts if self.result is not None else {}).items():
            counts[table] = counts.get(table, 0) + rows
        return counts

    @property
    def settled(self) -> bool:
        """Running, or done for good: a repeated request answers it rather than running
        the erasure again (a failure, or an erasure that left some of the subject, runs
        again; Eraser adds the counts of both runs)."""
        if self.status == "running":
            return True
        verified = self.result is not None and self.result.verified
        return self.status == "done" and (verified or self.dry_run)

    def answer(self, job_id: str) -> dict[str, Any]:
        if self.status != "running":
            self.reported = True
        out: dict[str, Any] = {"job_id": job_id, "status": self.status, "dry_run": self.dry_run}
        if self.result is not None:
            out["counts"] = dict(self.result.counts)
            out["verified"] = self.result.verified
        if self.status == "failed":
            out["error"] = self.error
            out["transient"] = self.transient
        return out


def is_transient(exc: BaseException) -> bool:
    """Whether a later attempt may succeed: the exception's own ``transient`` flag
    (Eraser's errors carry one), else a network or timeout error."""
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(exc, OSError | TimeoutError)


class ErasureBook:
    """Erasures by job id: started once, run in a background thread, remembered."""

    def __init__(self, erase: Erase, remember: int = 10_000) -> None:
        self._erase = erase
        self._remember = remember
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()
        # Fingerprints are keyed: a remembered request says nothing of the subject.
        self._key = secrets.token_bytes(32)

    def start(self, request: ErasureRequest) -> dict[str, Any]:
        """Start the job's erasure unless it is running or done; the answer either way."""
        fingerprint = self._fingerprint(request)
        with self._lock:
            record = self._records.get(request.job_id)
            if record is not None and not hmac.compare_digest(record.fingerprint, fingerprint):
                raise ErasureConflict(request.job_id)
            if record is not None and record.settled:
                return record.answer(request.job_id)
            carried = record.untold() if record is not None and not record.dry_run else {}
            record = _Record(fingerprint=fingerprint, dry_run=request.dry_run, carried=carried)
            self._records[request.job_id] = record
            self._records.move_to_end(request.job_id)
            self._forget_oldest()
        threading.Thread(
            target=self._run, args=(request, record), name="erasure", daemon=True
        ).start()
        return record.answer(request.job_id)

    def wait(self, job_id: str, seconds: float) -> dict[str, Any] | None:
        """The job's state once its erasure ended, or after ``seconds`` (blocks)."""
        with self._lock:
            record = self._records.get(job_id)
        if record is not None:
            record.ended.wait(seconds)
        return self.state(job_id)

    def state(self, job_id: str) -> dict[str, Any] | None:
        """The job's erasure as the protocol answers it; None for a job not known here."""
        with self._lock:
            record = self._records.get(job_id)
            return None if record is None else record.answer(job_id)

    def _run(self, request: ErasureRequest, record: _Record) -> None:
        try:
            result = self._erase(request)
            counts = dict(record.carried)
            for table, rows in result.counts.items():
                counts[str(table)] = counts.get(str(table), 0) + int(rows)
            done = ErasureResult(counts=counts, verified=bool(result.verified))
        except Exception as exc:  # the outcome is the answer; the message may hold the value
            log.warning("erasure %s failed: %s", request.job_id, type(exc).__name__)
            with self._lock:
                record.error, record.transient = type(exc).__name__, is_transient(exc)
                record.status = "failed"
            record.ended.set()
            return
        log.info("erasure %s done: %d removed", request.job_id, sum(counts.values()))
        with self._lock:
            record.result, record.status = done, "done"
        record.ended.set()

    def _fingerprint(self, request: ErasureRequest) -> bytes:
        text = "\x00".join([request.subject_kind, request.subject_value, str(request.dry_run)])
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()

    def _forget_oldest(self) -> None:
        """Drop the oldest finished outcomes beyond ``remember`` (never a running one)."""
        excess = len(self._records) - self._remember
        for job_id in [j for j, r in self._records.items() if r.status != "running"][:excess]:
            del self._records[job_id]
