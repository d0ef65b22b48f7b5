"""Eraser's Python client for upstream services: the HTTP API (``EraserClient``) and the
plain-Celery request queue (``submit_via_celery``). Needs httpx only, and installs no
module but this one.

The service side of the ``http`` protocol, ``erasure_router`` (a FastAPI router) and
``engine_erasure`` (Eraser's engine as its work), come with the ``router`` extra
(``pip install "eraser-client[router]"``) and are imported only when first used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eraser_client.broker import REQUEST_FIELDS, REQUEST_QUEUE, REQUEST_TASK, submit_via_celery
from eraser_client.erasures import ErasureRequest, ErasureResult
from eraser_client.http import TERMINAL, EraserApiError, EraserClient

if TYPE_CHECKING:
    from eraser_client.engine import engine_erasure
    from eraser_client.router import erasure_router

__all__ = [
    "REQUEST_FIELDS",
    "REQUEST_QUEUE",
    "REQUEST_TASK",
    "TERMINAL",
    "EraserApiError",
    "EraserClient",
    "ErasureRequest",
    "ErasureResult",
    "engine_erasure",
    "erasure_router",
    "submit_via_celery",
]


def __getattr__(name: str) -> Any:
    # Lazy: FastAPI (the router extra) and the eraser package (the engine) are optional.
    if name == "erasure_router":
        from eraser_client.router import erasure_router  # noqa: PLC0415

        return erasure_router
    if name == "engine_erasure":
        from eraser_client.engine import engine_erasure  # noqa: PLC0415

        return engine_erasure
    raise AttributeError(f"module 'eraser_client' has no attribute {name!r}")
