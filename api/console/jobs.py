"""The console's job pages: the list with filters, pages and live refresh, and one
job's page (per-service status, rows per table, attempts, dead letters)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from api.console.certificates import CertificateCheck, check_pasted, check_served
from api.console.pages import ConsoleRoute, PageError, read_form, render
from api.console.session import Operator, SignedIn, check_csrf
from api.console.views import TERMINAL, load
from api.dependencies import AppRegistry, AppSettings, Store
from api.keys import Scope
from api.params import decode_cursor, encode_cursor
from models.messages import JobView
from models.settings import Settings
from models.store import queries
from models.store.database import JobStore
from models.store.tables import JobStatus

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 25


@dataclass(frozen=True)
class Filters:
    status: str = ""
    kind: str = ""
    service: str = ""
    since: str = ""
    until: str = ""

    def query(self, **extra: str) -> str:
        pairs = {k: v for k, v in vars(self).items() if v}
        pairs.update({k: v for k, v in extra.items() if v})
        return urlencode(pairs)


def _moment(text: str, field: str) -> datetime | None:
    """A ``datetime-local`` field's value, taken as UTC (the form says so)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PageError(422, "Invalid time", f"The {field} time is not a date and time.") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _page(store: JobStore, filters: Filters, cursor: str) -> tuple[list[JobView], str | None]:
    """One page of jobs under the filters, and the cursor of the next."""
    since, until = _moment(filters.since, "from"), _moment(filters.until, "to")
    after = None
    if cursor:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise PageError(
                422, "Invalid page", "The page link is not one the console made."
            ) from None
    elif until is not None:
        # A position just before ``until``: the page starts with the jobs created before it.
        after = queries.JobPosition(until, "")
    with store.transaction(durable=False) as session:
        page = queries.list_jobs(
            session,
            limit=PAGE_SIZE,
            status=filters.status or None,
            subject_kind=filters.kind or None,
            service=filters.service or None,
            created_after=since,
            after=after,
        )
        found = [JobView.of(job) for job in page.jobs]
    after = page.next_after
    return found, encode_cursor(after) if after is not None else None


def _filters(
    status: str, kind: str, service: str, since: str, until: str, settings_kinds: list[str]
) -> Filters:
    if status and status not in {s.value for s in JobStatus}:
        raise PageError(422, "Invalid filter", "Choose a status from the list.")
    if kind and kind not in settings_kinds:
        raise PageError(422, "Invalid filter", "Choose a subject kind from the list.")
    return Filters(status, kind, service, since, until)


Text = Annotated[str, Query(max_length=64)]


@router.get("/")
def home(_operator: SignedIn) -> Response:
    return RedirectResponse("/console/jobs", status_code=303)


@router.get("/jobs")
def jobs(
    request: Request,
    operator: SignedIn,
    store: Store,
    registry: AppRegistry,
    status: Text = "",
    kind: Text = "",
    service: Text = "",
    since: Text = "",
    until: Text = "",
    cursor: Annotated[str, Query(max_length=400)] = "",
) -> Response:
    """The list of jobs, newest first; running ones refresh on their own."""
    filters = _filters(status, kind, service, since, until, sorted(registry.subjects))
    found, next_cursor = _page(store, filters, cursor)
    fragment = bool(request.headers.get("HX-Request"))
    return render(
        request,
        "_job_rows.html" if fragment else "jobs.html",
        {
            "jobs": found,
            "filters": filters,
            "cursor": cursor,
            "next_cursor": next_cursor,
            "statuses": [s.value for s in JobStatus],
            "kinds": sorted(registry.subjects),
            "services": sorted(registry.services),
            "live": any(j.status not in TERMINAL for j in found),
            "terminal": TERMINAL,
        },
        operator=operator,
    )


def _job_page(
    request: Request,
    job_id: str,
    operator: Operator,
    store: JobStore,
    settings: Settings,
    pasted: CertificateCheck | None = None,
) -> Response:
    page = load(store, settings, job_id[:64], letters=operator.may(Scope.ADMIN))
    if page is None:
        raise PageError(404, "No such job", "There is no job with this id.")
    certified = not page.view.dry_run and page.view.status == JobStatus.SUCCEEDED
    fragment = bool(request.headers.get("HX-Request"))
    return render(
        request,
        "_job_detail.html" if fragment else "job.html",
        {
            "job": page,
            "terminal": TERMINAL,
            "admin": operator.may(Scope.ADMIN),
            "certified": certified,
            "certificate": check_served(store, settings, page.view.id) if certified else None,
            "pasted": pasted,
        },
        operator=operator,
        status=200 if pasted is None or pasted.verified else 422,
    )


@router.get("/jobs/{job_id}")
def job(
    request: Request, job_id: str, operator: SignedIn, store: Store, settings: AppSettings
) -> Response:
    """One job: per-service status, rows per table, attempts, dead letters, and the
    certificate checked against the published keys."""
    return _job_page(request, job_id, operator, store, settings)


@router.post("/jobs/{job_id}/certificate/check")
async def check_certificate(
    request: Request, job_id: str, operator: SignedIn, store: Store, settings: AppSettings
) -> Response:
    """Check a certificate the operator holds for this job: against the keys the
    server publishes, and its claims against the job record."""
    form = await read_form(request)
    check_csrf(operator, form)
    if not re.fullmatch(r"[0-9a-f-]{1,64}", job_id):
        raise PageError(404, "No such job", "There is no job with this id.")
    pasted = check_pasted(store, settings, job_id, form.get("certificate", ""))
    return _job_page(request, job_id, operator, store, settings, pasted)


@router.get("/jobs/{job_id}/certificate")
def certificate_download(
    job_id: str, operator: SignedIn, store: Store, settings: AppSettings
) -> Response:
    """The job's erasure certificate (a compact JWS) as a file, for a signed-in
    operator: the API's own endpoint wants a Bearer key, which a browser link lacks."""
    del operator  # signed in is enough: the API serves certificates to jobs:read keys
    from api.certificates import CertificateRefused, certificate_of  # noqa: PLC0415

    if not re.fullmatch(r"[0-9a-f-]{1,64}", job_id):
        raise PageError(404, "No such job", "There is no job with this id.")
    try:
        token = certificate_of(store, settings, job_id)
    except CertificateRefused as exc:
        raise PageError(exc.status, exc.title, exc.detail) from None
    disposition = f'attachment; filename="eraser-certificate-{job_id}.jws"'
    return Response(
        token + "\n", media_type="application/jose", headers={"Content-Disposition": disposition}
    )
