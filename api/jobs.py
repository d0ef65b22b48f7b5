"""``eraser db|worker|submit|status|jobs``: the job store and the Celery chord from
the command line. Every command reads the registry from ``--config`` or
``ERASER_CONFIG`` and the job store from ``ERASER_DATABASE_URL``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from models import migrate
from models.messages import ErasureRequest, JobView
from models.registry import Registry, load_registry
from models.settings import Settings, get_settings
from models.store import queries
from models.store.database import JobStore
from models.store.tables import JobStatus
from tasks.embedded import EmbeddedWorker, announce, is_embedded
from tasks.queues import all_queues
from tasks.resources import Resources, use_resources
from tasks.submit import submit_and_dispatch
from worker.database import create_engine

EXIT_OK = 0
#: The job ended, but not ``succeeded``.
EXIT_JOB_FAILED = 1
#: ``--wait`` gave up before the job ended.
EXIT_TIMEOUT = 3


def add_commands(sub: Any) -> None:
    """Register the job commands on the ``eraser`` parser's subcommands."""

    def config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, metavar="FILE", help="registry (ERASER_CONFIG)")

    db = sub.add_parser("db", help="job store maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply the job-store migrations (idempotent)")
    up.set_defaults(handler=cmd_db_upgrade)

    worker = sub.add_parser(
        "worker",
        help="run a Celery worker for Eraser (extra arguments go to celery worker)",
        add_help=False,
    )
    config(worker)
    worker.set_defaults(handler=cmd_worker)

    submit_p = sub.add_parser("submit", help="submit an erasure job")
    config(submit_p)
    submit_p.add_argument("--subject-kind", required=True, metavar="KIND")
    submit_p.add_argument("--subject", required=True, metavar="VALUE")
    submit_p.add_argument("--service", action="append", default=[], metavar="NAME")
    submit_p.add_argument("--dry-run", action="store_true")
    submit_p.add_argument("--idempotency-key", metavar="KEY")
    submit_p.add_argument("--reason", metavar="TEXT")
    submit_p.add_argument("--requested-by", default="cli", metavar="WHO")
    submit_p.add_argument("--wait", action="store_true", help="wait until the job ends")
    submit_p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    submit_p.add_argument("--json", action="store_true")
    submit_p.set_defaults(handler=cmd_submit)

    status = sub.add_parser("status", help="show one job")
    config(status)
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    jobs = sub.add_parser("jobs", help="list recent jobs")
    config(jobs)
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(handler=cmd_jobs)


def _settings(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    if getattr(args, "config", None):
        settings = settings.model_copy(update={"config": args.config})
    return settings


def _store(settings: Settings) -> JobStore:
    return JobStore(create_engine(settings.database_url))


def _registry(settings: Settings) -> Registry:
    return load_registry(settings.config)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    settings = get_settings()
    engine = create_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        sys.stdout.write(f"job store at revision {migrate.current_revision(engine)}\n")
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import app  # noqa: PLC0415 - the app reads its settings when imported

    settings = _settings(args)
    if is_embedded(settings):
        raise EmbeddedOnly(
            "the broker is in-process (memory://): a separate worker cannot reach it. Set "
            "ERASER_BROKER_URL (e.g. redis://127.0.0.1:6379/0); embedded, `eraser submit` "
            "runs its own worker"
        )
    extra = list(args.extra)
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in extra):
        extra += ["-Q", ",".join(all_queues(_registry(settings), settings.default_queue))]
    app.worker_main(["worker", *extra])
    return EXIT_OK


def embedded_session(settings: Settings, registry: Registry, store: JobStore) -> ExitStack:
    """In embedded mode (in-process broker), run the worker in this process for as
    long as the command runs; elsewhere, nothing (workers run on their own)."""
    stack = ExitStack()
    if is_embedded(settings):
        announce(settings)
        migrate.upgrade(store.engine)
        use_resources(Resources(settings=settings, registry=registry, store=store))
        stack.enter_context(EmbeddedWorker(settings))
    return stack


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    registry = _registry(settings)
    store = _store(settings)
    if is_embedded(settings):
        args.wait = True  # the worker lives only as long as this command
    try:
        with embedded_session(settings, registry, store):
            return _submit(args, settings, registry, store)
    finally:
        store.dispose()


def _submit(
    args: argparse.Namespace, settings: Settings, registry: Registry, store: JobStore
) -> int:
    request = ErasureRequest(
        subject_kind=args.subject_kind,
        subject_value=args.subject,
        services=args.service,
        dry_run=args.dry_run,
        idempotency_key=args.idempotency_key,
        requested_by=args.requested_by,
        reason=args.reason,
    )
    job, created = submit_and_dispatch(
        store, registry, request, settings.job_timeout_seconds, settings.default_queue
    )
    if not args.wait:
        _show(_load(store, job.id), args.json, note="submitted" if created else "existing")
        return EXIT_OK
    return wait_and_show(store, job.id, args.timeout, args.json)


def wait_and_show(store: JobStore, job_id: str, timeout: float, as_json: bool) -> int:
    """Wait until the job ends (or ``timeout``), show it, and return the exit status:
    0 succeeded, 1 ended otherwise, 3 still running."""
    deadline = time.monotonic() + timeout
    while True:
        view = _load(store, job_id)
        if JobStatus(view.status).terminal:
            _show(view, as_json)
            return EXIT_OK if view.status == JobStatus.SUCCEEDED else EXIT_JOB_FAILED
        if time.monotonic() >= deadline:
            _show(view, as_json, note="still running")
            return EXIT_TIMEOUT
        time.sleep(0.1)


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        _show(_load(store, args.job_id), args.json)
    finally:
        store.dispose()
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        with store.transaction() as session:
            page = queries.list_jobs(session, limit=args.limit, status=args.status or None)
            views = [JobView.of(j) for j in page.jobs]
    finally:
        store.dispose()
    if args.json:
        sys.stdout.write(json.dumps([_json(v) for v in views], indent=2) + "\n")
        return EXIT_OK
    for v in views:
        kind = "dry run" if v.dry_run else "erasure"
        sys.stdout.write(
            f"{v.id}  {v.status:<16} {v.subject_kind:<10} {kind:<8} {v.total_rows:>10} rows  "
            f"{v.created_at:%Y-%m-%d %H:%M:%S}\n"
        )
    return EXIT_OK


class EmbeddedOnly(Exception):
    """A command that needs a shared broker was run in embedded mode."""


class JobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id}")


def _load(store: JobStore, job_id: str) -> JobView:
    with store.transaction() as session:
        job = queries.get_job(session, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return JobView.of(job)


def _json(view: JobView) -> dict[str, Any]:
    return view.model_dump(mode="json")


def _show(view: JobView, as_json: bool, note: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_json(view), indent=2) + "\n")
        return
    kind = "dry run" if view.dry_run else "erasure"
    extra = f" ({note})" if note else ""
    sys.stdout.write(f"job {view.id}: {view.status}{extra}, {kind}, {view.total_rows} rows\n")
    for t in view.tasks:
        line = f"  {t.service:<16} {t.status:<10} attempts {t.attempts:<3} {t.rows:>10} rows"
        sys.stdout.write(line + (f"  error: {t.error}" if t.error else "") + "\n")
