"""The served OpenAPI document agrees with what the API does: a Bearer security
scheme on every protected operation (and on none of the probes), typed query
parameters, the cursor's 422 described, problem documents as the error schema; and
405 answers name every method the path serves in ``Allow``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.sqlite_api import SqliteApi, sqlite_api

#: Operations without a key: the probes and the certificates' public keys.
PROBES = {("get", "/healthz"), ("get", "/readyz"), ("get", "/.well-known/jwks.json")}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SqliteApi]:
    yield from sqlite_api(tmp_path)


@pytest.fixture
def document(api: SqliteApi) -> dict[str, Any]:
    answer = api.call("GET", "/openapi.json", None)
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_the_api_key_is_an_http_bearer_scheme(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "eraser keys create" in scheme["description"]


def test_every_protected_operation_lists_the_scheme(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        names = [p["name"].lower() for p in operation.get("parameters", [])]
        assert "authorization" not in names, (method, path)
        if (method, path) in PROBES:
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [{"ApiKey": []}], (method, path)


def test_query_parameters_are_typed(document: dict[str, Any]) -> None:
    listing = document["paths"]["/v1/jobs"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert {"type": "string", "format": "date-time"} in params["created_after"]["anyOf"]
    cursor = next(s for s in params["cursor"]["anyOf"] if s.get("type") == "string")
    assert cursor["pattern"] == "^[A-Za-z0-9_-]+$"
    assert "cursor" in listing["responses"]["422"]["description"]
    assert list(listing["responses"]["422"]["content"]) == ["application/problem+json"]


def test_errors_are_problem_documents(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "ProblemDocument" in schemas
    assert "HTTPValidationError" not in schemas
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            if int(code) >= 400 and "content" in response:
                assert list(response["content"]) == ["application/problem+json"], (
                    method,
                    path,
                    code,
                )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/jobs", "GET, POST"),  # two routes, one per method
        ("PUT", "/v1/jobs/some-id", "GET"),
        ("GET", "/v1/jobs/some-id/retry", "POST"),
        ("DELETE", "/v1/jobs/some-id/certificate", "GET"),
        ("GET", "/v1/dead-letters/1/replay", "POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/openapi.json", "GET, HEAD"),
    ],
)
def test_a_405_names_the_allowed_methods(
    api: SqliteApi, method: str, path: str, allowed: str
) -> None:
    answer = api.call(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.json()["type"] == "urn:eraser:problem:method-not-allowed"


def test_every_protected_operation_documents_429_with_retry_after(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        if (method, path) in PROBES:
            continue
        refused = operation["responses"]["429"]
        assert list(refused["content"]) == ["application/problem+json"], (method, path)
        assert refused["headers"]["Retry-After"]["schema"]["type"] == "integer", (method, path)
