"""The served OpenAPI document: FastAPI's, with the problem document as the one error
schema (FastAPI's own validation-error schemas are never answered, so they go)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.problems import ProblemDocument


def install(app: FastAPI) -> None:
    """Serve ``app``'s document, built once on first request."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            built = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = built.setdefault("components", {}).setdefault("schemas", {})
            schemas["ProblemDocument"] = ProblemDocument.model_json_schema()
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = built
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
