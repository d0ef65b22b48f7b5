"""The work behind ``eraser db|worker|submit|status|jobs``: the job store and the Celery
chord from the command line. ``api.cli.jobs`` declares the commands and imports this
module when one runs. Every command reads the registry from ``--config`` or
``ERASER_CONFIG`` and the job store from ``ERASER_DATABASE_URL``."""

from __future__ import annotations

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


class EmbeddedOnly(Exception):
    """A command that needs a shared broker was run in embedded mode."""


class JobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id}")


def settings_for(config: Path | None) -> Settings:
    """The settings, with ``--config`` (when given) as the registry's file."""
    settings = get_settings()
    if config is not None:
        settings = settings.model_copy(update={"config": config})
    return settings


def open_store(settings: Settings) -> JobStore:
    """The job store of ``settings`` (the caller disposes of it)."""
    return JobStore(create_engine(settings.database_url))


def registry_of(settings: Settings) -> Registry:
    """The registry ``settings`` names."""
    return load_registry(settings.config)


def db_upgrade() -> int:
    """Apply the job store's migrations and print its revision."""
    engine = create_engine(get_settings().database_url)
    try:
        migrate.upgrade(engine)
        sys.stdout.write(f"job store at revision {migrate.current_revision(engine)}\n")
    finally:
        engine.dispose()
    return EXIT_OK


def run_worker(config: Path | None, extra: list[str]) -> int:
    """Run ``celery worker`` with ``extra``; without ``-Q``, on every queue."""
    from worker.app import app  # noqa: PLC0415 - the app reads its settings when imported

    settings = settings_for(config)
    if is_embedded(settings):
        raise EmbeddedOnly(
            "the broker is in-process (memory://): a separate worker cannot reach it. Set "
            "ERASER_BROKER_URL (e.g. redis://127.0.0.1:6379/0); embedded, `eraser submit` "
            "runs its own worker"
        )
    extra = list(extra)
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in extra):
        extra += ["-Q", ",".join(all_queues(registry_of(settings), settings.default_queue))]
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


def submit(
    config: Path | None, request: ErasureRequest, *, wait: bool, timeout: float, as_json: bool
) -> int:
    """Submit ``request`` and show the job (``wait``: once it ended). Embedded, it always
    waits: the worker lives only as long as this command."""
    settings = settings_for(config)
    registry = registry_of(settings)
    store = open_store(settings)
    wait = wait or is_embedded(settings)
    try:
        with embedded_session(settings, registry, store):
            job, created = submit_and_dispatch(
                store, registry, request, settings.job_timeout_seconds, settings.default_queue
            )
            if not wait:
                _show(_load(store, job.id), as_json, note="submitted" if created else "existing")
                return EXIT_OK
            return wait_and_show(store, job.id, timeout, as_json)
    finally:
        store.dispose()


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


def show_status(config: Path | None, job_id: str, as_json: bool) -> int:
    """Show one job and its tasks."""
    store = open_store(settings_for(config))
    try:
        _show(_load(store, job_id), as_json)
    finally:
        store.dispose()
    return EXIT_OK


def recent_jobs(config: Path | None, status: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs (in ``status`` when given), as JSON documents."""
    store = open_store(settings_for(config))
    try:
        with store.transaction() as session:
            page = queries.list_jobs(session, limit=limit, status=status)
            return [_json(JobView.of(j)) for j in page.jobs]
    finally:
        store.dispose()


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
