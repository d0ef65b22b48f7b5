"""``eraser retry|dead-letters|beat``: what operators run when something failed.

- ``eraser retry JOB_ID [--service NAME ...]`` re-runs only the failed tasks of a job.
- ``eraser dead-letters list|show ID|replay ID`` inspects and replays dead letters.
- ``eraser beat`` runs the reaper every few seconds (safe on several replicas).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from api.jobs import EXIT_OK, _registry, _settings, _store, wait_and_show
from models.store import queries
from models.store.tables import DeadLetter
from tasks.reaper import ReapReport, reap, run_forever
from tasks.submit import replay_dead_letter, retry_job
from worker.logs import use_json

log = logging.getLogger("eraser.ops")


def add_commands(sub: Any) -> None:
    def config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="registry (ERASER_CONFIG)")

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true", help="wait until the job ends again")
        p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
        p.add_argument("--json", action="store_true")

    retry = sub.add_parser("retry", help="re-run only the failed tasks of a job")
    config(retry)
    retry.add_argument("job_id", metavar="JOB_ID")
    retry.add_argument(
        "--service", action="append", default=[], metavar="NAME", help="only this failed service"
    )
    retry.add_argument("--actor", default="cli", metavar="WHO", help="recorded in the audit")
    waiting(retry)
    retry.set_defaults(handler=cmd_retry)

    letters = sub.add_parser("dead-letters", help="inspect and replay dead letters")
    letters_sub = letters.add_subparsers(dest="dl_command", required=True, metavar="ACTION")
    listing = letters_sub.add_parser("list", help="dead letters not yet replayed")
    config(listing)
    listing.add_argument("--job", metavar="JOB_ID")
    listing.add_argument("--all", action="store_true", help="include replayed ones")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_dl_list)
    show = letters_sub.add_parser("show", help="one dead letter, with its task's history")
    config(show)
    show.add_argument("letter_id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_dl_show)
    replay = letters_sub.add_parser("replay", help="run a dead letter's task again")
    config(replay)
    replay.add_argument("letter_id", type=int, metavar="ID")
    replay.add_argument("--actor", default="cli", metavar="WHO", help="recorded in the audit")
    waiting(replay)
    replay.set_defaults(handler=cmd_dl_replay)

    beat = sub.add_parser("beat", help="run the reaper periodically (outbox, stale tasks, ...)")
    config(beat)
    beat.add_argument("--once", action="store_true", help="one round, then exit")
    beat.add_argument("--json", action="store_true", help="with --once: print what it did")
    beat.set_defaults(handler=cmd_beat)


def cmd_retry(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    try:
        services = retry_job(
            store,
            _registry(settings),
            args.job_id,
            settings.default_queue,
            services=args.service,
            actor=args.actor,
            timeout_seconds=settings.job_timeout_seconds,
        )
        if not args.wait:
            sys.stdout.write(f"job {args.job_id}: retrying {', '.join(services)}\n")
            return EXIT_OK
        return wait_and_show(store, args.job_id, args.timeout, args.json)
    finally:
        store.dispose()


def cmd_dl_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    try:
        job_id, service = replay_dead_letter(
            store,
            _registry(settings),
            args.letter_id,
            settings.default_queue,
            actor=args.actor,
            timeout_seconds=settings.job_timeout_seconds,
        )
        if not args.wait:
            sys.stdout.write(f"dead letter {args.letter_id}: job {job_id}, {service} sent again\n")
            return EXIT_OK
        return wait_and_show(store, job_id, args.timeout, args.json)
    finally:
        store.dispose()


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


def cmd_dl_list(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        with store.transaction() as session:
            letters = queries.list_dead_letters(
                session, limit=args.limit, job_id=args.job or None, include_replayed=args.all
            )
            docs = [_letter_doc(d) for d in letters]
    finally:
        store.dispose()
    if args.json:
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


def cmd_dl_show(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        with store.transaction() as session:
            letter = queries.get_dead_letter(session, args.letter_id)
            if letter is None:
                raise LetterNotFound(args.letter_id)
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
    if args.json:
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


def cmd_beat(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    registry = _registry(settings)
    try:
        if args.once:
            report = reap(store, registry, settings)
            if args.json:
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
