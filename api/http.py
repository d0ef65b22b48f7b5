"""The HTTP API (FastAPI), versioned under ``/v1``; ``eraser api`` serves it.

Every call but ``/healthz``, ``/readyz``, ``/metrics``, ``/docs`` and the OpenAPI
document needs ``Authorization: Bearer <secret>`` of a key in ``ERASER_API_KEYS`` with
the scope the endpoint names (401 without a valid key, 403 without the scope). Errors
are RFC 9457 problem documents (``application/problem+json``) with a stable ``type``;
they never hold a stack trace, a DSN or a submitted value.

``create_app`` assembles the routers of ``api.routes`` (one module per resource) over
the job store, settings and registry it is given (``api.dependencies`` hands them to
the handlers).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from api import openapi, problems
from api.body_limit import BodyLimit
from api.console import routes as console
from api.dependencies import Reader
from api.metrics import JobStoreCollector
from api.params import declared_only
from api.problems import Problem, problem_responses
from api.routes import dead_letters, docs, health, jobs, metrics, services
from models import certificate
from models.jobstore import Job, JobStore
from models.registry import Registry
from models.settings import Settings

#: The routers of the OpenAPI document: their operations take only the query
#: parameters they declare.
ROUTERS = (health.router, jobs.router, dead_letters.router, services.router)


def create_app(
    settings: Settings, store: JobStore, registry: Registry, *, metrics_cache_seconds: float = 5.0
) -> FastAPI:
    """The API over a job store and a registry (``eraser api`` passes the process's)."""
    api = FastAPI(
        title="Eraser",
        version="1",
        description="Erase a subject from every database of a microservice estate.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 500, 503),
    )
    api.state.settings = settings
    api.state.store = store
    api.state.registry = registry
    api.state.metrics = CollectorRegistry(auto_describe=False)
    api.state.metrics.register(
        JobStoreCollector(store, registry, settings.default_queue, metrics_cache_seconds)
    )
    openapi.install(api)
    problems.install(api)
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    for router in ROUTERS:
        api.include_router(router, dependencies=[Depends(declared_only)])
    api.include_router(metrics.router)

    @api.get("/v1/jobs/{job_id}/certificate", tags=["jobs"])
    def get_certificate(job_id: str, _key: Reader) -> dict[str, Any]:
        """The signed erasure certificate of a finished job."""
        if settings.certificate_key is None:
            raise Problem(
                503, "no-certificate-key", "Certificates are off", "ERASER_CERTIFICATE_KEY is unset"
            )
        key = settings.certificate_key.get_secret_value().encode()
        with store.transaction(durable=False) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise Problem(404, "job-not-found", "No such job", f"no job {job_id}")
            try:
                return certificate.build(job, key)
            except certificate.CertificateError as exc:
                raise Problem(
                    409, "job-not-finished", "The job has not finished", str(exc)
                ) from None

    api.mount(console.STATIC_URL, console.static_files, name="console-static")
    api.include_router(console.router)
    api.include_router(docs.router)
    api.mount(docs.STATIC_URL, StaticFiles(directory=docs.STATIC_DIR), name="static")
    return api
