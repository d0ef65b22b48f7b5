"""The embedded default: the real chord inside one process, no server needed.

With no ``ERASER_*`` URLs set, the job store is a SQLite file, the broker is kombu's
``memory://`` transport and the result backend ``cache+memory://``. Both live in this
process, so the worker does too: ``EmbeddedWorker`` runs a Celery worker (thread pool)
in a background thread. The tasks, the chord, the job store and the engine are the
ones production runs; only the transport differs.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

from celery.worker import WorkController

from models.settings import Settings
from tasks.queues import all_queues
from tasks.resources import resources
from worker.app import app

log = logging.getLogger("eraser.embedded")

_announced = False


def is_embedded(settings: Settings) -> bool:
    """True when the broker lives in this process (``memory://``)."""
    return settings.broker_url.startswith("memory://")


def announce(settings: Settings, out: TextIO | None = None) -> None:
    """Say once which backends are in use."""
    global _announced  # noqa: PLW0603 - once per process
    if _announced:
        return
    _announced = True
    stream = out or sys.stderr
    if is_embedded(settings):
        store = settings.database_url.split("///", 1)[-1] if "///" in settings.database_url else "?"
        stream.write(
            f"eraser: embedded mode: job store {store} (SQLite), broker and results in this "
            "process, a worker thread runs the chord (set ERASER_BROKER_URL and "
            "ERASER_DATABASE_URL for a deployment)\n"
        )


class EmbeddedWorker:
    """A Celery worker on a thread pool, in a background thread of this process."""

    def __init__(self, settings: Settings, concurrency: int = 4) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self._worker: WorkController | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        queues = all_queues(resources().registry, self.settings.default_queue)
        self._worker = app.WorkController(
            app=app,
            pool_cls="threads",
            concurrency=self.concurrency,
            loglevel="WARNING",
            hostname="embedded@localhost",
            queues=queues,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=lambda _consumer: self._ready.set(),
        )
        self._thread = threading.Thread(
            target=self._worker.start, name="eraser-embedded-worker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the embedded worker did not start")

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop(in_sighandler=False, exitcode=0)
        if self._thread is not None:
            self._thread.join(10)
        self._worker = None
        self._thread = None
