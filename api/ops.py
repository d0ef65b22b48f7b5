"""The work behind ``eraser retry|dead-letters|beat``: what operators run when something
failed. ``api.cli.operations`` declares the commands and imports this module when one
runs.

- ``eraser retry JOB_ID [--service NAME ...]`` re-runs only the failed tasks of a job.
- ``eraser dead-letters list|show ID|replay ID`` inspects and replays dead letters.
- ``eraser beat`` runs the reaper every few seconds (safe on several replicas).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from api.jobs import EXIT_OK, open_store, registry_of, settings_for, wait_and_show
from models.store import queries
from models.store.database import JobStore
from models.store.tables import DeadLetter
from tasks.reaper import ReapReport, reap, run_forever
from tasks.submit import replay_dead_letter, retry_job
from worker.logs import use_json

log = logging.getLogger("eraser.ops")


def retry(
    config: Path | None,
    job_id: str,
    services: list[str],
    *,
    actor: str,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> int:
    """Re-run the failed tasks of ``job_id`` (only ``services`` when given)."""
    settings = settings_for(config)
    store = open_store(settings)
    try:
        retried = retry_job(
            store,
            registry_of(settings),
            job_id,
            settings.default_queue,
            services=services,
            actor=actor,
            timeout_seconds=settings.job_timeout_seconds,
        )
        sent = f"job {job_id}: retrying {', '.join(retried)}"
        return _show_sent(store, job_id, sent, wait=wait, timeout=timeout, as_json=as_json)
    finally:
        store.dispose()


def replay(
    config: Path | None, letter_id: int, *, actor: str, wait: bool, timeout: float, as_json: bool
) -> int:
    """Send a dead letter's task again, then finalize its job."""
    settings = settings_for(config)
    store = open_store(settings)
    try:
        job_id, service = replay_dead_letter(
            store,
            registry_of(settings),
            letter_id,
            settings.default_queue,
            actor=actor,
            timeout_seconds=settings.job_timeout_seconds,
        )
        sent = f"dead letter {letter_id}: job {job_id}, {service} sent again"
        return _show_sent(store, job_id, sent, wait=wait, timeout=timeout, as_json=as_json)
    finally:
        store.dispose()


def _show_sent(
    store: JobStore, job_id: str, sent: str, *, wait: bool, timeout: float, as_json: bool
) -> int:
    """Say what was sent again, or (``wait``) wait for the job to end and show it."""
    if wait:
        return wait_and_show(store, job_id, timeout, as_json)
    sys.stdout.write(sent + "\n")
    return EXIT_OK


def _letter_doc(letter: DeadLetter, with_trace: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": letter.id,
        "job_id": letter.job_id,
        "service": letter.service,
        "reason": letter.reason,
        "error": letter.error,
        "attempts": letter.attempts,
        "created_at": letter.created_at.isoformat(),
        "replayed_at": letter.replayed_at.isoformat() if letter.replayed_at else None,
        "replayed_by": letter.replayed_by,
    }
    if with_trace:
        doc["traceback"] = letter.traceback
    return doc


def list_letters(
    config: Path | None, job_id: str | None, *, include_replayed: bool, limit: int, as_json: bool
) -> int:
    """Print the newest dead letters (of ``job_id`` when given)."""
    store = open_store(settings_for(config))
    try:
        with store.transaction() as session:
            letters = queries.list_dead_letters(
                session, limit=limit, job_id=job_id or None, include_replayed=include_replayed
            )
            docs = [_letter_doc(d) for d in letters]
    finally:
        store.dispose()
    if as_json:
        sys.stdout.write(json.dumps(docs, indent=2) + "\n")
        return EXIT_OK
    if not docs:
        sys.stdout.write("no dead letters\n")
    for d in docs:
        replayed = " (replayed)" if d["replayed_at"] else ""
        sys.stdout.write(
            f"{d['id']:>6}  {d['job_id']}  {d['service']:<14} {d['reason']:<17} "
            f"{d['created_at'][:19]}{replayed}\n        {d['error']}\n"
        )
    return EXIT_OK


class LetterNotFound(Exception):
    def __init__(self, letter_id: int) -> None:
        super().__init__(f"no dead letter {letter_id}")


def show_letter(config: Path | None, letter_id: int, as_json: bool) -> int:
    """Print one dead letter with its task's attempts."""
    store = open_store(settings_for(config))
    try:
        with store.transaction() as session:
            letter = queries.get_dead_letter(session, letter_id)
            if letter is None:
                raise LetterNotFound(letter_id)
            doc = _letter_doc(letter, with_trace=True)
            attempts = queries.task_history(session, letter.job_id, letter.service)
            doc["history"] = [
                {
                    "number": a.number,
                    "outcome": a.outcome,
                    "error": a.error,
                    "rows": a.rows,
                    "worker": a.worker,
                    "started_at": a.started_at.isoformat(),
                    "finished_at": a.finished_at.isoformat() if a.finished_at else None,
                }
                for a in attempts
            ]
    finally:
        store.dispose()
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return EXIT_OK
    out = sys.stdout
    out.write(f"dead letter {doc['id']}: job {doc['job_id']}, service {doc['service']}\n")
    out.write(f"  reason    {doc['reason']}\n  error     {doc['error']}\n")
    out.write(f"  attempts  {doc['attempts']}\n  created   {doc['created_at'][:19]}\n")
    if doc["replayed_at"]:
        out.write(f"  replayed  {doc['replayed_at'][:19]} by {doc['replayed_by']}\n")
    out.write("  history\n")
    for a in doc["history"]:
        err = f"  {a['error']}" if a["error"] else ""
        out.write(f"    #{a['number']:<3} {a['outcome']:<10} {a['rows']:>9} rows{err}\n")
    if doc["traceback"]:
        out.write("  traceback (frames only)\n")
        for line in doc["traceback"].splitlines():
            out.write(f"    {line}\n")
    return EXIT_OK


def _report_doc(report: ReapReport) -> dict[str, Any]:
    return {
        "ran": report.ran,
        "dispatched": report.dispatched,
        "requeued": [list(t) for t in report.requeued],
        "dead_lettered": [list(t) for t in report.dead_lettered],
        "finalized": report.finalized,
        "expired": report.expired,
    }


def beat(config: Path | None, *, once: bool, as_json: bool) -> int:
    """Run the reaper every few seconds (``once``: one round)."""
    settings = settings_for(config)
    store = open_store(settings)
    registry = registry_of(settings)
    try:
        if once:
            report = reap(store, registry, settings)
            if as_json:
                sys.stdout.write(json.dumps(_report_doc(report)) + "\n")
            return EXIT_OK
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        if settings.log_format == "json":
            use_json()
        log.info("reaper every %gs", settings.reaper_interval_seconds)
        run_forever(store, registry, settings)
    finally:
        store.dispose()
    return EXIT_OK
