"""Eraser's Python client for upstream services: the HTTP API (``EraserClient``) and the
plain-Celery request queue (``submit_via_celery``). Needs httpx only, and installs no
module but this one."""

from __future__ import annotations

from eraser_client.broker import REQUEST_FIELDS, REQUEST_QUEUE, REQUEST_TASK, submit_via_celery
from eraser_client.http import TERMINAL, EraserApiError, EraserClient

__all__ = [
    "REQUEST_FIELDS",
    "REQUEST_QUEUE",
    "REQUEST_TASK",
    "TERMINAL",
    "EraserApiError",
    "EraserClient",
    "submit_via_celery",
]
