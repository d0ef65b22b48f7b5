"""Worker liveness for orchestrators: a heartbeat file and the check that reads it.

With ``ERASER_LIVENESS_FILE`` set, a consumer bootstep in the worker's main process
writes the current time to that file every ``ERASER_LIVENESS_SECONDS``, from the
consumer's own event loop: when the loop is stuck (lost broker connection that never
comes back, a wedged consumer), the file goes stale. ``eraser health worker`` exits 1
when the file is missing or older than ``--max-age`` seconds: a Kubernetes exec
liveness probe that costs nothing, unlike ``celery inspect ping`` (a broadcast round
trip through the broker for every probe).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import bootsteps


def touch(path: Path) -> None:
    """Write the current time atomically (a reader never sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".liveness-")
    with os.fdopen(handle, "w") as out:
        out.write(f"{time.time():.3f}\n")
    os.replace(temp, path)


def age(path: Path) -> float | None:
    """Seconds since the last beat (None when there is no readable file)."""
    try:
        written = float(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return max(0.0, time.time() - written)


class LivenessFile(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: beats while the consumer runs."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        from models.settings import get_settings  # noqa: PLC0415 - read in the worker

        settings = get_settings()
        self.path = settings.liveness_file
        self.interval = settings.liveness_seconds
        self._timer: Any = None

    def start(self, parent: Any) -> None:
        if self.path is None:
            return
        path = self.path
        touch(path)
        self._timer = parent.timer.call_repeatedly(self.interval, touch, (path,), priority=10)

    def stop(self, parent: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
