"""The HTTP API (FastAPI), versioned under ``/v1``; ``eraser api`` serves it.

Every call but ``/healthz``, ``/readyz`` and the OpenAPI document needs
``Authorization: Bearer <secret>`` of a key in ``ERASER_API_KEYS`` with the scope the
endpoint names (401 without a valid key, 403 without the scope). Errors are RFC 9457
problem documents (``application/problem+json``) with a stable ``type``; they never
hold a stack trace, a DSN or a submitted value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import certificates
from api.keys import Scope as KeyScope
from api.keys import authenticate
from api.metrics import JobStoreCollector
from models.messages import ErasureRequest, JobView, Text
from models.registry import Registry
from models.settings import ApiKeyEntry, Settings
from models.store.database import JobStore
from models.store.tables import DeadLetter, Job, JobStatus
from tasks.submit import (
    IdempotencyConflict,
    RetryRefused,
    SubmitError,
    cancel_job,
    replay_dead_letter,
    retry_job,
    submit_and_dispatch,
)
from worker.app import app as celery_app

log = logging.getLogger("eraser.api")

PROBLEM = "application/problem+json"
PROBLEM_BASE = "urn:eraser:problem:"


class Problem(Exception):
    """An error answered as a problem document."""

    def __init__(self, status: int, kind: str, title: str, detail: str | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail


def problem_response(
    status: int, kind: str, title: str, detail: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# --- request and response shapes ---------------------------------------------------------


class SubmitBody(BaseModel):
    """``POST /v1/jobs``: what to erase."""

    model_config = ConfigDict(extra="forbid")

    subject_kind: Text = Field(min_length=1, max_length=64)
    subject_value: Text = Field(min_length=1, max_length=1000)
    services: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100
    )
    dry_run: bool = False
    reason: Text | None = Field(default=None, max_length=2000)


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": "A problem document",
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}},
        }
        for code in codes
    }


class JobPage(BaseModel):
    items: list[JobView]
    #: Pass as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


class RetryAnswer(BaseModel):
    job_id: str
    services: list[str]


class DeadLetterView(BaseModel):
    id: int
    job_id: str
    service: str
    reason: str
    error: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None
    replayed_by: str | None


class ServiceView(BaseModel):
    name: str
    subjects: list[str]
    queue: str | None
    batch_size: int
    lock_timeout_ms: int
    policies: dict[str, str]
    plan: dict[str, Any] | None = None
    plan_error: str | None = None


# --- the app --------------------------------------------------------------------------------


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, declared or streamed (the body is
    read up to the limit before the app sees it), and refuse NUL characters in the
    path or query (PostgreSQL text cannot hold them) with 400."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if (
            b"%00" in raw_path
            or b"%00" in scope.get("query_string", b"")
            or "\x00" in scope.get("path", "")
        ):
            await problem_response(400, "invalid-request", "NUL characters are not allowed")(
                scope, receive, send
            )
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "body-too-large", "Request body too large", f"at most {self.limit} bytes"
        )
        await response(scope, receive, send)


def _require(scope: KeyScope) -> Callable[..., Awaitable[ApiKeyEntry]]:
    """A dependency: the caller's API key, which must hold ``scope``."""

    async def check(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> ApiKeyEntry:
        settings: Settings = request.app.state.settings
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Problem(401, "unauthorized", "An API key is required (Bearer)")
        key = authenticate(authorization[7:].strip(), settings.api_keys)
        if key is None:
            raise Problem(401, "unauthorized", "The API key is not valid")
        if scope.value not in key.scopes:
            raise Problem(403, "forbidden", f"The API key lacks the scope {scope.value}")
        return key

    return check


Reader = Annotated[ApiKeyEntry, Depends(_require(KeyScope.READ))]
Submitter = Annotated[ApiKeyEntry, Depends(_require(KeyScope.SUBMIT))]
Admin = Annotated[ApiKeyEntry, Depends(_require(KeyScope.ADMIN))]


def create_app(
    settings: Settings, store: JobStore, registry: Registry, *, metrics_cache_seconds: float = 5.0
) -> FastAPI:
    """The API over a job store and a registry (``eraser api`` passes the process's)."""
    api = FastAPI(
        title="Eraser",
        version="1",
        description="Erase a subject from every database of a microservice estate.",
        openapi_url="/openapi.json",
        responses=_problem_responses(400, 401, 403, 404, 409, 413, 422, 500, 503),
    )
    api.state.settings = settings

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(
                title=api.title, version=api.version, description=api.description, routes=api.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["ProblemDocument"] = ProblemDocument.model_json_schema()
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)

    @api.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.kind, exc.title, exc.detail)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem_response(
            422, "invalid-request", "The request is not valid", errors=errors[:20]
        )

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(exc.status_code, kind, str(exc.detail))

    @api.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.error("API error %s", type(exc).__name__)
        return problem_response(500, "internal", "Internal error")

    def load(job_id: str) -> JobView:
        with store.transaction(durable=False) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise Problem(404, "job-not-found", "No such job", f"no job {job_id}")
            return JobView.of(job)

    metrics_registry = CollectorRegistry(auto_describe=False)
    metrics_registry.register(
        JobStoreCollector(store, registry, settings.default_queue, metrics_cache_seconds)
    )

    @api.get("/metrics", tags=["health"], include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics (no key: keep it inside the cluster)."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        """The job store and the broker answer."""
        checks: dict[str, str] = {}
        try:
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            checks["job_store"] = "ok"
        except Exception as exc:
            checks["job_store"] = f"unreachable ({type(exc).__name__})"
        try:
            with celery_app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable ({type(exc).__name__})"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @api.post(
        "/v1/jobs",
        status_code=202,
        tags=["jobs"],
        response_model=JobView,
        responses={200: {"model": JobView, "description": "The job of an earlier request"}},
    )
    def create_job(
        body: SubmitBody,
        key: Submitter,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
        ] = None,
    ) -> JSONResponse:
        """Submit an erasure (``dry_run: true`` for a preview). ``202`` with the new job;
        the same ``Idempotency-Key`` returns the first job (``200``), or ``409`` when
        the body differs."""
        kind = registry.subjects.get(body.subject_kind)
        needs_admin = kind is not None and kind.admin_only and not body.dry_run
        if needs_admin and KeyScope.ADMIN.value not in key.scopes:
            raise Problem(
                403,
                "forbidden",
                f"Erasing a {body.subject_kind} needs the scope {KeyScope.ADMIN.value}",
            )
        request = ErasureRequest(
            subject_kind=body.subject_kind,
            subject_value=body.subject_value,
            services=body.services,
            dry_run=body.dry_run,
            idempotency_key=idempotency_key,
            requested_by=key.id,
            reason=body.reason,
        )
        try:
            job, created = submit_and_dispatch(
                store,
                registry,
                request,
                settings.job_timeout_seconds,
                settings.default_queue,
                owner=key.id,
            )
        except IdempotencyConflict as exc:
            raise Problem(409, "idempotency-conflict", "Idempotency key reused", str(exc)) from None
        except SubmitError as exc:
            raise Problem(
                422, "invalid-request", "The request cannot become a job", str(exc)
            ) from None
        view = load(job.id)
        return JSONResponse(view.model_dump(mode="json"), status_code=202 if created else 200)

    @api.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=JobView)
    def get_job(job_id: str, _key: Reader) -> JobView:
        return load(job_id)

    @api.get("/v1/jobs", tags=["jobs"], response_model=JobPage)
    def list_jobs(
        _key: Reader,
        status: JobStatus | None = None,
        subject_kind: Annotated[str | None, Query(max_length=64)] = None,
        created_after: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> JobPage:
        """Newest first. ``next_cursor`` continues where the page ended (stable while new
        jobs arrive: they sort before the cursor)."""
        query = sa.select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(Job.status == status.value)
        if subject_kind is not None:
            query = query.where(Job.subject_kind == subject_kind)
        if created_after is not None:
            query = query.where(Job.created_at > _utc(created_after))
        if cursor is not None:
            at, last_id = _decode_cursor(cursor)
            query = query.where(
                sa.or_(Job.created_at < at, sa.and_(Job.created_at == at, Job.id < last_id))
            )
        with store.transaction(durable=False) as session:
            jobs = list(session.scalars(query))
            items = [JobView.of(j) for j in jobs[:limit]]
            more = len(jobs) > limit
            last = jobs[limit - 1] if more else None
            next_cursor = _encode_cursor(last.created_at, last.id) if last is not None else None
        return JobPage(items=items, next_cursor=next_cursor)

    @api.post("/v1/jobs/{job_id}/retry", tags=["jobs"], response_model=RetryAnswer)
    def retry(job_id: str, key: Admin) -> RetryAnswer:
        """Re-run only the failed tasks, in a new chord."""
        load(job_id)
        try:
            names = retry_job(
                store,
                registry,
                job_id,
                settings.default_queue,
                actor=f"key:{key.id}",
                timeout_seconds=settings.job_timeout_seconds,
            )
        except RetryRefused as exc:
            raise Problem(409, "nothing-to-retry", "Nothing to retry", str(exc)) from None
        return RetryAnswer(job_id=job_id, services=names)

    @api.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], response_model=RetryAnswer)
    def cancel(job_id: str, key: Admin) -> RetryAnswer:
        """Cancel the tasks that have not started."""
        load(job_id)
        try:
            names = cancel_job(store, job_id, actor=f"key:{key.id}")
        except RetryRefused as exc:
            raise Problem(409, "nothing-to-cancel", "Nothing to cancel", str(exc)) from None
        return RetryAnswer(job_id=job_id, services=names)

    @api.get(
        "/v1/jobs/{job_id}/certificate",
        tags=["jobs"],
        response_class=Response,
        responses=certificates.CERTIFICATE_RESPONSES,
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
    )
    def jwks() -> Response:
        """The public keys that verify certificates (no authentication)."""
        try:
            return certificates.jwks_response(settings)
        except certificates.CertificateRefused as exc:
            raise Problem(exc.status, exc.kind, exc.title, exc.detail) from None

    @api.get("/v1/dead-letters", tags=["dead letters"], response_model=list[DeadLetterView])
    def dead_letters(
        _key: Admin,
        job_id: Annotated[str | None, Query(max_length=36)] = None,
        include_replayed: bool = False,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[DeadLetterView]:
        query = sa.select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(DeadLetter.job_id == job_id)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        with store.transaction(durable=False) as session:
            return [
                DeadLetterView.model_validate(d, from_attributes=True)
                for d in session.scalars(query)
            ]

    @api.post(
        "/v1/dead-letters/{letter_id}/replay", tags=["dead letters"], response_model=RetryAnswer
    )
    def replay(letter_id: int, key: Admin) -> RetryAnswer:
        try:
            job_id, service = replay_dead_letter(
                store,
                registry,
                letter_id,
                settings.default_queue,
                actor=f"key:{key.id}",
                timeout_seconds=settings.job_timeout_seconds,
            )
        except RetryRefused as exc:
            status = 404 if "no dead letter" in str(exc) else 409
            kind = "dead-letter-not-found" if status == 404 else "already-replayed"
            raise Problem(status, kind, "Cannot replay", str(exc)) from None
        return RetryAnswer(job_id=job_id, services=[service])

    @api.get("/v1/services", tags=["registry"], response_model=list[ServiceView])
    def services(_key: Reader, plans: bool = False) -> list[ServiceView]:
        """The registry (never a DSN); ``plans=true`` adds each service's plan summary
        for every subject kind it holds (this connects to the databases)."""
        out = []
        for name, service in sorted(registry.services.items()):
            view = ServiceView(
                name=name,
                subjects=registry.kinds_for(name),
                queue=service.queue,
                batch_size=service.batch_size,
                lock_timeout_ms=service.lock_timeout_ms,
                policies={t: p.action.value for t, p in service.tables.items()},
            )
            if plans:
                view.plan, view.plan_error = _plan_summary(registry, name)
            out.append(view)
        return out

    return api


def _plan_summary(registry: Registry, name: str) -> tuple[dict[str, Any] | None, str | None]:
    from tasks.resources import resources  # noqa: PLC0415 - engines live with the worker's
    from worker.faults import classify  # noqa: PLC0415
    from worker.service import plan_service  # noqa: PLC0415

    summary: dict[str, Any] = {}
    try:
        engine = resources().engine_for(name)
        for kind in registry.kinds_for(name):
            plan = plan_service(
                engine, registry.services[name], registry.subject_columns(name, kind)
            )
            summary[kind] = {
                "tables": len(plan.steps),
                "cycles": [" -> ".join(c.path) for c in plan.cycles],
                "warnings": len(plan.warnings),
                "schema_fingerprint": plan.fingerprint,
            }
    except Exception as exc:
        return None, classify(exc).description
    return summary, None


def _utc(moment: datetime) -> datetime:
    """In UTC (naive means UTC): PostgreSQL refuses offsets beyond 15:59 that Python
    accepts."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _encode_cursor(at: datetime, job_id: str) -> str:
    raw = json.dumps([at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(job_id, str) or "\x00" in job_id or len(job_id) > 64:
            raise ValueError("bad job id")
        return _utc(datetime.fromisoformat(at)), job_id
    except (ValueError, TypeError, binascii.Error):
        raise Problem(400, "invalid-cursor", "The cursor is not valid") from None
