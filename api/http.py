"""The HTTP API (FastAPI), versioned under ``/v1``; ``eraser api`` serves it.

Every call but ``/healthz``, ``/readyz``, ``/metrics``, ``/docs``, the JWKS and the
OpenAPI document needs ``Authorization: Bearer <secret>`` of an unexpired key in
``ERASER_API_KEYS`` or ``ERASER_API_KEYS_FILE`` with the scope the endpoint names (401
without a valid key, 403 without the scope; 429 past a rate limit, ``api.rate_limits``). Errors
are RFC 9457 problem documents (``application/problem+json``) with a stable ``type``;
they never hold a stack trace, a DSN or a submitted value.

``create_app`` assembles the routers of ``api.routes`` (one module per resource) over
the job store, settings and registry it is given (``api.dependencies`` hands them to
the handlers).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from api import certificates, openapi, problems
from api.body_limit import BodyLimit
from api.console import routes as console
from api.dependencies import Reader
from api.keys import ApiKeys
from api.metrics import JobStoreCollector
from api.params import declared_only
from api.problems import Problem, problem_responses
from api.rate_limits import RateLimits
from api.routes import dead_letters, docs, health, jobs, metrics, services
from models.registry import Registry
from models.settings import Settings
from models.store.database import JobStore

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
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 503),
    )
    api.state.settings = settings
    api.state.api_keys = ApiKeys(settings.api_keys, settings.api_keys_file)
    api.state.rate_limits = RateLimits(settings)
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

    @api.get(
        "/v1/jobs/{job_id}/certificate",
        tags=["jobs"],
        response_class=Response,
        responses=certificates.CERTIFICATE_RESPONSES,
        dependencies=[Depends(declared_only)],
    )
    def get_certificate(
        job_id: str, _key: Reader, accept: Annotated[str | None, Header()] = None
    ) -> Response:
        """The signed erasure certificate of a finished job: a compact JWS (Ed25519),
        verifiable with the keys at ``/.well-known/jwks.json``."""
        try:
            return certificates.certificate_response(store, settings, job_id, accept)
        except certificates.CertificateRefused as exc:
            raise Problem(exc.status, exc.kind, exc.title, exc.detail) from None

    @api.get(
        "/.well-known/jwks.json",
        tags=["certificates"],
        response_class=Response,
        responses=certificates.JWKS_RESPONSES,
        dependencies=[Depends(declared_only)],
    )
    def jwks() -> Response:
        """The public keys that verify certificates (no authentication)."""
        try:
            return certificates.jwks_response(settings)
        except certificates.CertificateRefused as exc:
            raise Problem(exc.status, exc.kind, exc.title, exc.detail) from None

    api.mount(console.STATIC_URL, console.static_files, name="console-static")
    api.include_router(console.router)
    api.include_router(docs.router)
    api.mount(docs.STATIC_URL, StaticFiles(directory=docs.STATIC_DIR), name="static")
    return api
