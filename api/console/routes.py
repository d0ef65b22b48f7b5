"""The operator console at ``/console/``: ``router`` holds its pages, ``static_files``
its vendored assets (htmx 2, 0BSD; the console's CSS and time script), mounted at
``STATIC_URL`` by ``create_app``. Any other ``/console/`` path is an HTML 404 page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from api.console import erase, jobs, operations, services, signin
from api.console.pages import STATIC_URL, ConsoleRoute, PageError, static_files

__all__ = ["STATIC_URL", "router", "static_files"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
for part in (signin.router, jobs.router, erase.router, operations.router, services.router):
    router.include_router(part)


@router.api_route("/console/{rest:path}", methods=["GET", "POST"])
def not_found(_request: Request, rest: str) -> Response:
    raise PageError(404, "No such page", "The console has no page here.")


@router.get("/console")
def console_root(_request: Request) -> Response:
    return RedirectResponse("/console/jobs", status_code=303)
