"""The Celery application. Every setting lives in ``celeryconfig.py``; the task
modules are named here as strings, so this module imports nothing above ``worker``."""

from __future__ import annotations

from celery import Celery

app = Celery(
    "eraser",
    include=[
        "tasks.erase",
        "tasks.finalize",
        "tasks.submit",
        "tasks.events",
        "tasks.requests",
    ],
)
app.config_from_object("celeryconfig")

# Worker liveness file (ERASER_LIVENESS_FILE): a consumer step, idle when unset.
from worker import logs  # noqa: E402, F401 - connects the JSON log format
from worker.liveness import LivenessFile  # noqa: E402 - after the app exists

app.steps["consumer"].add(LivenessFile)

# A deployment's worker refuses to start without its secrets (one line naming them).
from celery.signals import celeryd_init  # noqa: E402

from models.keyring import exit_without_secrets  # noqa: E402

celeryd_init.connect(exit_without_secrets, weak=False)
