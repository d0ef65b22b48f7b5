"""``/v1/jobs`` over a SQLite job store: listing with filters and cursor pages, typed
query parameters (422 problems, never a 500), one job, cancel; and the handlers called
directly, without HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.security import HTTPAuthorizationCredentials

from api.dependencies import caller
from api.keys import Scope
from api.params import encode_cursor
from api.problems import Problem
from api.routes import jobs
from models.store.queries import JobPosition
from models.store.tables import Job, JobStatus
from tests.unit.sqlite_api import SqliteApi, sqlite_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SqliteApi]:
    yield from sqlite_api(tmp_path)


def problem(answer: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = answer.json()
    assert doc["type"] == f"urn:eraser:problem:{kind}"
    assert "Traceback" not in answer.text
    return doc


def test_pages_list_every_job_once_newest_first(api: SqliteApi) -> None:
    made = [api.submit(str(i)).id for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.call("GET", "/v1/jobs", "reader", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == len(set(seen))
    with api.store.transaction() as session:
        newest_first = session.scalars(
            sa.select(Job.id).order_by(Job.created_at.desc(), Job.id.desc())
        ).all()
    assert seen == newest_first


def test_filters(api: SqliteApi) -> None:
    old, new, user = api.submit("1"), api.submit("2"), api.submit("u", kind="user")
    with api.store.transaction() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == old.id)
            .values(created_at=datetime(2020, 1, 1, tzinfo=UTC), status=JobStatus.SUCCEEDED)
        )

    def ids(**params: Any) -> set[str]:
        answer = api.call("GET", "/v1/jobs", "reader", params=params)
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["items"]}

    assert ids(status="succeeded") == {old.id}
    assert ids(status="pending") == {new.id, user.id}
    assert ids(subject_kind="user") == {user.id}
    assert ids(created_after="2021-01-01T00:00:00Z") == {new.id, user.id}
    # An offset PostgreSQL could not store is taken in UTC.
    assert ids(created_after="2019-12-31T12:00:00+23:59") == {old.id, new.id, user.id}


@pytest.mark.parametrize(
    "value",
    [
        "0.5",  # a number is not a date-time (it used to be read as a Unix time)
        "1700000000",  # nor is an integer
        "yesterday",  # nor a word
        "2024-01-01",  # a date without a time
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    ],
)
def test_created_after_takes_only_an_iso_date_time(api: SqliteApi, value: str) -> None:
    answer = api.call("GET", "/v1/jobs", "reader", params={"created_after": value})
    doc = problem(answer, 422, "invalid-request")
    assert doc["errors"][0]["loc"] == ["query", "created_after"]


@pytest.mark.parametrize(
    "cursor",
    [
        "bm90IGpzb24",  # base64 of "not json": the schema's alphabet, not a cursor
        encode_cursor(JobPosition(datetime(2024, 1, 1, tzinfo=UTC), "x" * 65)),  # id too long
        "%%%",  # outside the schema's alphabet
    ],
)
def test_a_cursor_that_does_not_decode_is_a_422(api: SqliteApi, cursor: str) -> None:
    answer = api.call("GET", "/v1/jobs", "reader", params={"cursor": cursor})
    doc = problem(answer, 422, "invalid-request")
    assert doc["errors"][0]["loc"] == ["query", "cursor"]


def test_one_job_and_an_unknown_one(api: SqliteApi) -> None:
    job = api.submit("secret-value-4711")
    answer = api.call("GET", f"/v1/jobs/{job.id}", "reader")
    assert answer.status_code == 200
    assert answer.json()["id"] == job.id
    assert [t["service"] for t in answer.json()["tasks"]] == ["crm", "shop"]
    assert "secret-value-4711" not in answer.text
    problem(api.call("GET", "/v1/jobs/nope", "reader"), 404, "job-not-found")


def test_cancel_then_nothing_left_to_cancel(api: SqliteApi) -> None:
    job = api.submit()
    answer = api.call("POST", f"/v1/jobs/{job.id}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"job_id": job.id, "services": ["crm", "shop"]}
    assert api.call("GET", f"/v1/jobs/{job.id}", "reader").json()["status"] == "cancelled"
    problem(api.call("POST", f"/v1/jobs/{job.id}/cancel"), 409, "nothing-to-cancel")
    problem(api.call("POST", f"/v1/jobs/{job.id}/retry"), 409, "nothing-to-retry")


def test_scopes(api: SqliteApi) -> None:
    job = api.submit()
    problem(api.call("POST", f"/v1/jobs/{job.id}/cancel", "reader"), 403, "forbidden")
    problem(api.call("GET", "/v1/jobs", "submitter"), 403, "forbidden")
    problem(api.call("GET", "/v1/jobs", None), 401, "unauthorized")


def test_handlers_are_plain_functions(api: SqliteApi) -> None:
    made = {api.submit(str(i)).id for i in range(3)}
    key = api.settings.api_keys[0]
    first = jobs.list_jobs(key, api.store, limit=2)
    assert len(first.items) == 2
    assert first.next_cursor is not None
    rest = jobs.list_jobs(key, api.store, limit=2, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert {j.id for j in first.items + rest.items} == made
    assert jobs.get_job(first.items[0].id, key, api.store).id == first.items[0].id


def test_the_key_dependency_checks_the_scope(api: SqliteApi) -> None:
    check = caller(Scope.ADMIN)
    reader = HTTPAuthorizationCredentials(scheme="Bearer", credentials=api.secrets["reader"])
    keys, limits = api.app.state.api_keys, api.app.state.rate_limits
    with pytest.raises(Problem) as refused:
        check("127.0.0.1", keys, limits, reader)
    assert refused.value.status == 403
    admin = HTTPAuthorizationCredentials(scheme="Bearer", credentials=api.secrets["all"])
    assert check("127.0.0.1", keys, limits, admin).name == "all"


def test_new_jobs_sort_before_a_cursor_already_handed_out(api: SqliteApi) -> None:
    for i in range(4):
        api.submit(str(i))
    first = api.call("GET", "/v1/jobs", "reader", params={"limit": 2}).json()
    later = api.submit("late")
    with api.store.transaction() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == later.id)
            .values(created_at=datetime.now(UTC) + timedelta(seconds=5))
        )
    rest = api.call(
        "GET", "/v1/jobs", "reader", params={"limit": 10, "cursor": first["next_cursor"]}
    ).json()
    assert later.id not in {item["id"] for item in rest["items"]}
    assert len(first["items"]) + len(rest["items"]) == 4


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/jobs", {"statuss": "failed"}),  # a typo must not list every job
        ("/v1/jobs/some-id", {"verbose": "1"}),
        ("/v1/dead-letters", {"jobid": "x"}),
        ("/healthz", {"x": ""}),
    ],
)
def test_an_undeclared_query_parameter_is_a_422(
    api: SqliteApi, path: str, params: dict[str, str]
) -> None:
    answer = api.call("GET", path, "all", params=params)
    doc = problem(answer, 422, "invalid-request")
    assert doc["errors"][0]["loc"] == ["query"]
    assert next(iter(params)) not in doc["errors"][0]["msg"]  # the caller's input is not echoed


def test_a_query_parameter_given_twice_is_a_422(api: SqliteApi) -> None:
    answer = api.call("GET", "/v1/jobs?subject_kind=tenant&subject_kind=user", "reader")
    doc = problem(answer, 422, "invalid-request")
    assert doc["errors"][0]["msg"] == "a query parameter given more than once: subject_kind"
