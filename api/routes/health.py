"""``/healthz`` (the process is up) and ``/readyz`` (the job store and the broker
answer): no key, for orchestrators' probes."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import orm

from api.dependencies import Store
from models.store import queries
from worker.app import app as celery_app

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
def readyz(store: Store) -> JSONResponse:
    """The job store and the broker answer."""
    checks = {"job_store": _job_store(store.engine), "broker": _broker()}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


def _job_store(engine: sa.Engine) -> str:
    try:
        # A plain session on the engine: the store's own transactions may take the
        # embedded (SQLite) store's write lock, which a probe has no business holding.
        with orm.Session(engine) as session:
            queries.ping(session)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _broker() -> str:
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"
