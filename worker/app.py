"""The Celery application. Settings live in ``celeryconfig.py``."""

from __future__ import annotations

from celery import Celery

app = Celery("eraser")
app.config_from_object("celeryconfig")
