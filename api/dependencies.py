"""What handlers ask FastAPI for: the job store, the settings, the registry, and the
caller's API key with the scope an operation needs.

``create_app`` puts the first three on ``app.state``; handlers take them as
parameters, so a test can call a handler with its own. The key comes from an
``Authorization: Bearer`` header, declared as an HTTP Bearer security scheme so the
OpenAPI document (and Swagger UI's Authorize button) shows it on every protected
operation: 401 without a valid key (or with an expired one), 403 without the scope,
429 once a client address has failed to authenticate too often.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry

from api.keys import ApiKeys, KeysUnavailable, Scope
from api.problems import Problem
from api.rate_limits import Limit, RateLimits
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


def api_keys(request: Request) -> ApiKeys:
    keys: ApiKeys = request.app.state.api_keys
    return keys


def rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


def client_address(request: Request) -> str:
    """The client's address (behind a proxy, as uvicorn's ``--proxy-headers`` and
    ``--forwarded-allow-ips`` make it)."""
    return request.client.host if request.client else "unknown"


def metrics_registry(request: Request) -> CollectorRegistry:
    metrics: CollectorRegistry = request.app.state.metrics
    return metrics


Store = Annotated[JobStore, Depends(job_store)]
AppSettings = Annotated[Settings, Depends(app_settings)]
AppRegistry = Annotated[Registry, Depends(service_registry)]
Metrics = Annotated[CollectorRegistry, Depends(metrics_registry)]
Keys = Annotated[ApiKeys, Depends(api_keys)]
Limits = Annotated[RateLimits, Depends(rate_limits)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
ClientAddress = Annotated[str, Depends(client_address)]


def caller(scope: Scope) -> Callable[..., ApiKeyEntry]:
    """A dependency: the caller's API key, which must hold ``scope``. A failure counts
    against the client's address (``Limit.BAD_KEYS``); past the limit it is a 429."""

    def check(
        address: ClientAddress, keys: Keys, limits: Limits, credentials: Credentials
    ) -> ApiKeyEntry:
        try:
            key = keys.authenticate(credentials.credentials.strip()) if credentials else None
        except KeysUnavailable:
            raise Problem(
                503, "keys-unavailable", "API keys cannot be read", "see the API's log"
            ) from None
        if key is None or key.expired():
            limits.hit(Limit.BAD_KEYS, address)
            if credentials is None:
                raise Problem(401, "unauthorized", "An API key is required (Bearer)")
            if key is not None:
                raise Problem(401, "key-expired", "The API key has expired", "ask for a new key")
            raise Problem(401, "unauthorized", "The API key is not valid")
        if scope.value not in key.scopes:
            raise Problem(403, "forbidden", f"The API key lacks the scope {scope.value}")
        return key

    return check


Reader = Annotated[ApiKeyEntry, Depends(caller(Scope.READ))]
Submitter = Annotated[ApiKeyEntry, Depends(caller(Scope.SUBMIT))]
Admin = Annotated[ApiKeyEntry, Depends(caller(Scope.ADMIN))]
