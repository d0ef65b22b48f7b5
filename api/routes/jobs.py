"""``/v1/jobs``: submit an erasure, read jobs, retry their failed tasks, cancel them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.dependencies import Admin, AppRegistry, AppSettings, Limits, Reader, Store, Submitter
from api.keys import Scope
from api.params import Cursor, Moment, decode_cursor, encode_cursor
from api.problems import Problem, problem_responses
from api.rate_limits import Limit
from models.messages import ErasureRequest, JobView, Text
from models.store import queries
from models.store.database import JobStore
from models.store.tables import JobStatus
from tasks.submit import (
    IdempotencyConflict,
    RetryRefused,
    SubmitError,
    cancel_job,
    retry_job,
    submit_and_dispatch,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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


class JobPage(BaseModel):
    items: list[JobView]
    #: Pass as ``cursor`` for the next page; absent on the last page.
    next_cursor: str | None = None


class RetryAnswer(BaseModel):
    job_id: str
    services: list[str]


def load(store: JobStore, job_id: str) -> JobView:
    """The job's view; a 404 problem when there is none."""
    with store.transaction(durable=False) as session:
        job = queries.get_job(session, job_id)
        if job is None:
            raise Problem(404, "job-not-found", "No such job", f"no job {job_id}")
        return JobView.of(job)


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    responses={200: {"model": JobView, "description": "The job of an earlier request"}},
)
def create_job(
    body: SubmitBody,
    key: Submitter,
    store: Store,
    settings: AppSettings,
    registry: AppRegistry,
    limits: Limits,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> JSONResponse:
    """Submit an erasure (``dry_run: true`` for a preview). ``202`` with the new job;
    the same ``Idempotency-Key`` returns the first job (``200``), or ``409`` when
    the body differs. ``429`` past the key's submission (or, for a dry run, expensive
    call) rate limit."""
    limits.hit(Limit.SUBMITS, key.id)
    if body.dry_run:
        limits.hit(Limit.EXPENSIVE, key.id)
    kind = registry.subjects.get(body.subject_kind)
    needs_admin = kind is not None and kind.admin_only and not body.dry_run
    if needs_admin and Scope.ADMIN.value not in key.scopes:
        raise Problem(
            403, "forbidden", f"Erasing a {body.subject_kind} needs the scope {Scope.ADMIN.value}"
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
        raise Problem(422, "invalid-request", "The request cannot become a job", str(exc)) from None
    view = load(store, job.id)
    return JSONResponse(view.model_dump(mode="json"), status_code=202 if created else 200)


@router.get("/{job_id}", response_model=JobView)
def get_job(job_id: str, _key: Reader, store: Store) -> JobView:
    """One job, its tasks and their attempts (never the subject's value)."""
    return load(store, job_id)


@router.get(
    "",
    response_model=JobPage,
    responses=problem_responses(
        422, _422="A parameter is not valid, or the cursor is not one this API handed out"
    ),
)
def list_jobs(
    _key: Reader,
    store: Store,
    status: JobStatus | None = None,
    subject_kind: Annotated[str | None, Query(max_length=64)] = None,
    created_after: Annotated[Moment | None, Query()] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    """Newest first. ``next_cursor`` continues where the page ended (stable while new
    jobs arrive: they sort before the cursor)."""
    with store.transaction(durable=False) as session:
        page = queries.list_jobs(
            session,
            limit=limit,
            status=status.value if status is not None else None,
            subject_kind=subject_kind,
            created_after=created_after,
            after=decode_cursor(cursor) if cursor is not None else None,
        )
        items = [JobView.of(j) for j in page.jobs]
    next_cursor = encode_cursor(page.next_after) if page.next_after is not None else None
    return JobPage(items=items, next_cursor=next_cursor)


@router.post("/{job_id}/retry", response_model=RetryAnswer)
def retry(
    job_id: str, key: Admin, store: Store, settings: AppSettings, registry: AppRegistry
) -> RetryAnswer:
    """Re-run only the failed tasks, in a new chord."""
    load(store, job_id)
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


@router.post("/{job_id}/cancel", response_model=RetryAnswer)
def cancel(job_id: str, key: Admin, store: Store) -> RetryAnswer:
    """Cancel the tasks that have not started."""
    load(store, job_id)
    try:
        names = cancel_job(store, job_id, actor=f"key:{key.id}")
    except RetryRefused as exc:
        raise Problem(409, "nothing-to-cancel", "Nothing to cancel", str(exc)) from None
    return RetryAnswer(job_id=job_id, services=names)
