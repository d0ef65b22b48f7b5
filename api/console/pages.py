"""How the console answers: Jinja2 pages under a strict Content-Security-Policy, and
clear HTML error pages instead of problem documents or tracebacks.

``ConsoleRoute`` is the route class of every console router: it adds the security
headers to each answer and turns the failures a page can meet (no session, a missing
scope or CSRF token, bad input, a refused action, anything unexpected) into a page
that says what happened, with the right status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope as AsgiScope

from api.console.session import Forbidden, Operator, SignInRequired, current
from api.problems import Problem
from api.rate_limits import Limit, RateLimits

log = logging.getLogger("eraser.console")

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_URL = "/console/static"
#: Largest form body the console reads (the API's own limit applies first).
FORM_MAX_BYTES = 16384

#: Everything from this origin only; no inline script or style, no framing, forms
#: post only here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=HERE / "templates")


def _utc(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


templates.env.filters["utc"] = _utc
templates.env.filters["iso"] = _iso


class PageError(Exception):
    """A page that cannot be shown or an action that does not apply: ``status``, a
    title and a sentence saying what to do."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}


def count_call(limits: RateLimits, limit: Limit, key_id: str) -> None:
    """Count one call of ``key_id`` against one of the API's rate limits; past it, a
    page that says when to try again (429 with ``Retry-After``)."""
    try:
        limits.hit(limit, key_id)
    except Problem as exc:
        raise PageError(
            429, "Too many requests", exc.detail or exc.title, dict(exc.headers or {})
        ) from None


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    operator: Operator | None = None,
    status: int = 200,
) -> Response:
    values = {"operator": operator, "static": STATIC_URL, **(context or {})}
    return templates.TemplateResponse(request, template, values, status_code=status)


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    response = render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status": status},
        operator=current(request),
        status=status,
    )
    response.headers.update(HEADERS)
    return response


def _sign_in_redirect(request: Request) -> Response:
    target = request.url.path
    if request.headers.get("HX-Request"):
        # An htmx poll whose session ended: send the whole page to the sign-in form.
        response = Response(status_code=401)
        response.headers["HX-Redirect"] = "/console/sign-in"
        return response
    return RedirectResponse(f"/console/sign-in?next={quote(target)}", status_code=303)


class ConsoleRoute(APIRoute):
    """An ``APIRoute`` whose answers carry the console's headers and whose errors are
    pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = _sign_in_redirect(request)
            except Forbidden as exc:
                response = error_page(request, 403, "Not allowed", str(exc))
            except PageError as exc:
                response = error_page(request, exc.status, exc.title, exc.detail)
                response.headers.update(exc.headers)
            except RequestValidationError:
                response = error_page(
                    request, 422, "Invalid input", "A field of the request is not valid."
                )
            except HTTPException as exc:
                response = error_page(request, exc.status_code, "Error", str(exc.detail))
            except Exception:
                log.exception("console page %s failed", request.url.path)
                response = error_page(
                    request, 500, "Something went wrong", "The error is in the API's log."
                )
            response.headers.update(HEADERS)
            return response

        return answer


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (the last value of a
    repeated field wins). Larger than ``FORM_MAX_BYTES``: a 413 page. A post whose
    ``Origin`` is another site is refused (403), the sign-in form's included."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("The form was posted from another site.")
    body = await request.body()
    if len(body) > FORM_MAX_BYTES:
        raise PageError(413, "Form too large", "The form is larger than the console accepts.")
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(415, "Not a form", "The console takes HTML form posts only.")
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


class ConsoleStatic(StaticFiles):
    """The console's vendored assets, with its security headers."""

    async def get_response(self, path: str, scope: AsgiScope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


static_files = ConsoleStatic(directory=STATIC_DIR)
