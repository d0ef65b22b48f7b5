"""What handlers ask FastAPI for: the job store, the settings, the registry, and the
caller's API key with the scope an operation needs.

``create_app`` puts the first three on ``app.state``; handlers take them as
parameters, so a test can call a handler with its own. The key comes from an
``Authorization: Bearer`` header, declared as an HTTP Bearer security scheme so the
OpenAPI document (and Swagger UI's Authorize button) shows it on every protected
operation: 401 without a valid key, 403 without the scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from api.keys import Scope, authenticate
from api.problems import Problem
from models.registry import Registry
from models.settings import ApiKeyEntry, Settings
from models.store.database import JobStore

#: Absent or malformed credentials reach ``caller`` as None: it answers with a
#: problem document rather than FastAPI's own error.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An Eraser API key (`eraser keys create`): `Authorization: Bearer ek_...`",
)


def job_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def service_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def metrics_registry(request: Request) -> CollectorRegistry:
    metrics: CollectorRegistry = request.app.state.metrics
    return metrics


Store = Annotated[JobStore, Depends(job_store)]
AppSettings = Annotated[Settings, Depends(app_settings)]
AppRegistry = Annotated[Registry, Depends(service_registry)]
Metrics = Annotated[CollectorRegistry, Depends(metrics_registry)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def caller(scope: Scope) -> Callable[..., Awaitable[ApiKeyEntry]]:
    """A dependency: the caller's API key, which must hold ``scope``."""

    async def check(settings: AppSettings, credentials: Credentials) -> ApiKeyEntry:
        if credentials is None:
            raise Problem(401, "unauthorized", "An API key is required (Bearer)")
        key = authenticate(credentials.credentials.strip(), settings.api_keys)
        if key is None:
            raise Problem(401, "unauthorized", "The API key is not valid")
        if scope.value not in key.scopes:
            raise Problem(403, "forbidden", f"The API key lacks the scope {scope.value}")
        return key

    return check


Reader = Annotated[ApiKeyEntry, Depends(caller(Scope.READ))]
Submitter = Annotated[ApiKeyEntry, Depends(caller(Scope.SUBMIT))]
Admin = Annotated[ApiKeyEntry, Depends(caller(Scope.ADMIN))]
