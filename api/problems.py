"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the API answers is one: a stable ``type`` (``urn:eraser:problem:<kind>``),
a title, the status, sometimes a detail. None holds a stack trace, a DSN or a value
the caller submitted. ``install`` turns FastAPI's own errors (validation, unknown
routes, wrong methods, crashes) into problem documents too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("eraser.api")

PROBLEM = "application/problem+json"
PROBLEM_BASE = "urn:eraser:problem:"
#: At most this many validation errors are listed in one answer.
MAX_ERRORS = 20


class Problem(Exception):
    """An error answered as a problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        #: Sent with the answer (``Retry-After`` of a 429).
        self.headers = headers


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_response(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


def problem_responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` naming a problem document for each code; ``described``
    (``_422="..."``) overrides the description of one code."""
    responses: dict[int | str, dict[str, Any]] = {
        code: {
            "description": described.get(f"_{code}", "A problem document"),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}},
        }
        for code in codes
    }
    if 429 in responses:
        responses[429]["headers"] = {
            "Retry-After": {
                "description": "Seconds until the rate limit allows another call",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return responses


#: The methods a 405's ``Allow`` header may name.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path. A path can be served by
    several routes (one per method, in several routers), so each method is tried
    against the whole routing table rather than read from the first route found."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem document."""
    app.exception_handler(Problem)(_problem)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http)
    app.exception_handler(Exception)(_crash)


async def _problem(_request: Request, exc: Problem) -> JSONResponse:
    return problem_response(exc.status, exc.kind, exc.title, exc.detail, exc.headers)


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    return problem_response(
        422, "invalid-request", "The request is not valid", errors=errors[:MAX_ERRORS]
    )


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route at this path only.
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(exc.status_code, kind, str(exc.detail), headers=headers)


async def _crash(_request: Request, exc: Exception) -> JSONResponse:
    log.error("API error %s", type(exc).__name__)
    return problem_response(500, "internal", "Internal error")
