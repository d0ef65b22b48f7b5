"""Erase a subject: choose a kind and type the value, see the dry run's plan per
service with its counts per table, then erase after typing the value again.

The value is shown on the preview page only, and only to the key that typed it;
every other page names the job id and the keyed hash. It travels in form bodies
(never in a URL) and reaches the job store as the API's submissions do.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from api.console.pages import ConsoleRoute, PageError, count_call, read_form, render
from api.console.plans import plans_for
from api.console.session import Operator, SignedIn, check_csrf, require
from api.console.views import TERMINAL, Typed, load, typed_value
from api.dependencies import AppRegistry, AppSettings, Limits, Store
from api.keys import Scope
from api.rate_limits import Limit, RateLimits
from models.messages import ErasureRequest
from models.registry import Registry
from models.settings import Settings
from models.store.database import JobStore
from tasks.submit import IdempotencyConflict, SubmitError, submit_and_dispatch

router = APIRouter(prefix="/console/erase", route_class=ConsoleRoute, include_in_schema=False)

VALUE_MAX = 1000


@router.get("")
def erase_form(request: Request, operator: SignedIn, registry: AppRegistry) -> Response:
    require(operator, Scope.SUBMIT)
    return render(
        request,
        "erase.html",
        {"kinds": sorted(registry.subjects.items()), "admin": operator.may(Scope.ADMIN)},
        operator=operator,
    )


async def _posted(request: Request, operator: Operator) -> dict[str, str]:
    """A submission's form, once its CSRF token and the submit scope are checked."""
    form = await read_form(request)
    check_csrf(operator, form)
    require(operator, Scope.SUBMIT)
    return form


def _admin_only(registry: Registry, kind: str) -> bool:
    subject = registry.subjects.get(kind)
    return bool(subject is not None and subject.admin_only)


def _count_against_limits(limits: RateLimits, operator: Operator, dry_run: bool) -> None:
    """The same limits as the API's ``POST /v1/jobs``: every submission counts against
    the key's submits, a dry run against its expensive calls too. Past one, a page that
    says when to try again (429, ``Retry-After``)."""
    count_call(limits, Limit.SUBMITS, operator.key.id)
    if dry_run:
        count_call(limits, Limit.EXPENSIVE, operator.key.id)


def _submit_erasure(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    operator: Operator,
    limits: RateLimits,
    **fields: Any,
) -> str:
    """Submit an erasure (a dry run or the real one) as ``operator``'s key, the way
    the API does; a refusal becomes a page that says why."""
    request = ErasureRequest(requested_by=operator.key.id, **fields)
    _count_against_limits(limits, operator, dry_run=bool(fields.get("dry_run")))
    try:
        job, _created = submit_and_dispatch(
            store,
            registry,
            request,
            settings.job_timeout_seconds,
            settings.default_queue,
            owner=request.requested_by,
        )
    except IdempotencyConflict:
        raise PageError(409, "Already submitted", "This erasure was submitted before.") from None
    except SubmitError as exc:
        raise PageError(422, "Cannot submit", str(exc)) from None
    return job.id


@router.post("")
async def preview(
    request: Request,
    operator: SignedIn,
    store: Store,
    registry: AppRegistry,
    settings: AppSettings,
    limits: Limits,
) -> Response:
    """Submit the dry run; its page shows the plan as it comes in."""
    form = await _posted(request, operator)
    kind, value = form.get("kind", ""), form.get("value", "").strip()
    if kind not in registry.subjects:
        raise PageError(422, "Unknown subject kind", "Choose a subject kind from the list.")
    if not value or len(value) > VALUE_MAX or "\x00" in value:
        raise PageError(422, "Invalid value", f"Type a value of 1 to {VALUE_MAX} characters.")
    job_id = _submit_erasure(
        store,
        registry,
        settings,
        operator,
        limits,
        subject_kind=kind,
        subject_value=value,
        dry_run=True,
        reason=form.get("reason") or None,
    )
    return RedirectResponse(f"/console/erase/{job_id}", status_code=303)


def _own_preview(store: Store, job_id: str, operator: Operator) -> Typed:
    """A dry run this operator's key submitted; 404 otherwise (the page does not tell a
    stranger's preview from a missing one)."""
    typed = typed_value(store, job_id[:64])
    if typed is None or typed.requested_by != operator.key.id:
        raise PageError(404, "No such preview", "There is no preview of yours with this id.")
    return typed


@router.get("/{job_id}")
def preview_page(
    request: Request,
    job_id: str,
    operator: SignedIn,
    store: Store,
    registry: AppRegistry,
    settings: AppSettings,
) -> Response:
    """The dry run's plan per service, and the confirmation form once it finished."""
    require(operator, Scope.SUBMIT)
    typed = _own_preview(store, job_id, operator)
    kind, value = typed.kind, typed.value
    page = load(store, settings, job_id, letters=False)
    if page is None or not page.view.dry_run:
        raise PageError(404, "No such preview", "This job is not a preview.")
    admin_only = _admin_only(registry, kind)
    fragment = bool(request.headers.get("HX-Request"))
    # The plan is read with the page, and once more with the refresh that finds the
    # dry run finished (then with its counts, swapped in out of band); the refreshes
    # in between carry only counts.
    plans = None
    if not fragment or not page.live:
        counts = None if page.live else page.counts
        plans = plans_for(registry, kind, page.services, counts)
    return render(
        request,
        "_preview.html" if fragment else "preview.html",
        {
            "job": page,
            "value": value,
            "kind": kind,
            "admin_only": admin_only,
            "may_erase": not admin_only or operator.may(Scope.ADMIN),
            "terminal": TERMINAL,
            "plans": plans,
            "plans_oob": fragment,
        },
        operator=operator,
    )


@router.post("/{job_id}/confirm")
async def confirm(
    request: Request,
    job_id: str,
    operator: SignedIn,
    store: Store,
    registry: AppRegistry,
    settings: AppSettings,
    limits: Limits,
) -> Response:
    """Erase for real what the preview showed, when the typed value matches."""
    form = await _posted(request, operator)
    preview = _own_preview(store, job_id, operator)
    kind = preview.kind
    if _admin_only(registry, kind):
        require(operator, Scope.ADMIN)
    value = form.get("confirm", "").strip()
    # The dry run's value is purged once it finished: the typed value is checked
    # against the keyed hash the job store keeps, and is what the erasure erases.
    typed_hash = store.seal.subject_hash(kind, value)
    if preview.subject_hash is None or not hmac.compare_digest(
        typed_hash.encode(), preview.subject_hash.encode()
    ):
        raise PageError(
            422, "The value does not match", "Type the value exactly as in the preview."
        )
    page = load(store, settings, job_id, letters=False)
    services = page.services if page is not None else []
    real = _submit_erasure(
        store,
        registry,
        settings,
        operator,
        limits,
        subject_kind=kind,
        subject_value=value,
        services=services,
        dry_run=False,
        # A second click (or a reload) finds the job of the first.
        idempotency_key=f"console-confirm:{job_id}",
    )
    return RedirectResponse(f"/console/jobs/{real}", status_code=303)
