"""``/docs``: Swagger UI over the served OpenAPI document, from assets vendored in the
package (``api/static/swagger``, swagger-ui-dist, Apache-2.0), so the page works
offline and names no host but its own. ``/`` leads there."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse

#: Mounted at ``STATIC_URL`` by ``create_app``.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_URL = "/static"
SWAGGER = f"{STATIC_URL}/swagger"

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request) -> RedirectResponse:
    """The API's front page is its documentation."""
    return RedirectResponse(request.scope.get("root_path", "") + "/docs")


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    """Swagger UI; its Authorize button takes an API key (Bearer)."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url,
        title=f"{request.app.title} API",
        swagger_js_url=f"{root}{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SWAGGER}/favicon-32x32.png",
        # Swagger UI would otherwise send the document to an online validator.
        swagger_ui_parameters={"validatorUrl": None},
    )
