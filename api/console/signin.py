"""Sign in with an API key, sign out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.console.pages import ConsoleRoute, error_page, read_form, render
from api.console.session import SignedIn, check_csrf, current, sign_in, sign_out
from api.problems import Problem
from api.rate_limits import Limit

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def _safe_next(target: str) -> str:
    """Only a console path: never another host (an open redirect)."""
    if target.startswith("/console/") and not target.startswith("/console//"):
        return target
    return "/console/jobs"


@router.get("/sign-in")
def sign_in_form(
    request: Request, next_page: Annotated[str, Query(alias="next", max_length=300)] = ""
) -> Response:
    return render(
        request,
        "sign_in.html",
        {"next": _safe_next(next_page), "failed": False},
        operator=current(request),
    )


@router.post("/sign-in")
async def sign_in_post(request: Request) -> Response:
    """Exchange an API key for a session cookie. (No CSRF token yet: there is no session;
    the cookie's SameSite=Strict and the key itself guard this form.)"""
    form = await read_form(request)
    target = _safe_next(form.get("next", ""))
    response = RedirectResponse(target, status_code=303)
    if sign_in(request, response, form.get("key", "")):
        return response
    # A failed sign-in counts against the address like a bad key on the API.
    address = request.client.host if request.client else "unknown"
    try:
        await run_in_threadpool(request.app.state.rate_limits.hit, Limit.BAD_KEYS, address)
    except Problem as exc:
        refused = error_page(request, 429, "Too many attempts", exc.detail or exc.title)
        refused.headers.update(exc.headers or {})
        return refused
    return render(
        request, "sign_in.html", {"next": target, "failed": True}, operator=None, status=401
    )


@router.post("/sign-out")
async def sign_out_post(request: Request, operator: SignedIn) -> Response:
    check_csrf(operator, await read_form(request))
    response = RedirectResponse("/console/sign-in", status_code=303)
    sign_out(response)
    return response
