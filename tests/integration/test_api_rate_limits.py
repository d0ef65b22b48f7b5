"""Rate limits counted in a real Redis (a database claimed for the test): submissions
and expensive calls per API key, failed authentications per client address, answered
429 with ``Retry-After``; two API replicas share one budget; an unreachable counter
lets calls through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from api.http import create_app
from api.keys import Scope, create_key
from api.rate_limits import KEY_PREFIX
from models.settings import Settings
from models.store.tables import Job
from tests.redis_dbs import claimed, need_redis, pool
from tests.unit.sqlite_api import SqliteApi, sqlite_api

ALL = [Scope.READ, Scope.SUBMIT, Scope.ADMIN]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SqliteApi]:
    yield from sqlite_api(tmp_path)


@pytest.fixture
def counter_url() -> Iterator[str]:
    need_redis()
    with claimed(1) as (number,):
        yield pool().url_of(number)


def replica(api: SqliteApi, **settings: Any) -> SqliteApi:
    """An API process's app over the same job store, with its own keys and limits."""
    keys = {name: create_key(name, ALL) for name in ("one", "two")}
    made = Settings(api_keys=[k.entry for k in keys.values()], **settings)
    app = create_app(made, api.store, api.registry, metrics_cache_seconds=0)
    return SqliteApi(app, api.store, api.registry, made, {n: k.secret for n, k in keys.items()})


def submit(live: SqliteApi, key: str, *, dry_run: bool = False) -> httpx.Response:
    body = {"subject_kind": "tenant", "subject_value": "t-1", "dry_run": dry_run}
    return live.call("POST", "/v1/jobs", key, json=body)


def assert_429(answer: httpx.Response, limit: str) -> int:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == "urn:eraser:problem:rate-limited"
    assert limit in body["detail"]
    retry_after = int(answer.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def jobs(live: SqliteApi) -> int:
    with live.store.transaction(durable=False) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Job)) or 0)


def test_submissions_past_a_keys_limit_get_429_and_make_no_job(
    api: SqliteApi, counter_url: str
) -> None:
    live = replica(api, rate_limit_storage=counter_url, rate_limit_submits="3/minute")
    assert [submit(live, "one").status_code for _ in range(3)] == [202] * 3
    retry_after = assert_429(submit(live, "one"), "submits")
    assert retry_after <= 60
    assert jobs(live) == 3
    # Another key has its own budget.
    assert submit(live, "two").status_code == 202


def test_dry_runs_and_plans_are_expensive(api: SqliteApi, counter_url: str) -> None:
    live = replica(api, rate_limit_storage=counter_url, rate_limit_expensive="2/minute")
    assert live.call("GET", "/v1/services?plans=true", "one").status_code == 200
    assert submit(live, "one", dry_run=True).status_code == 202
    assert_429(submit(live, "one", dry_run=True), "expensive")
    assert_429(live.call("GET", "/v1/services?plans=true", "one"), "expensive")
    # Real submissions and the registry without plans are not expensive.
    assert submit(live, "one").status_code == 202
    assert live.call("GET", "/v1/services", "one").status_code == 200
    assert live.call("GET", "/v1/services?plans=true", "two").status_code == 200


def test_bad_keys_are_counted_per_address_across_replicas(api: SqliteApi, counter_url: str) -> None:
    """Two API processes over one Redis: an address's failures add up across them."""
    first = replica(api, rate_limit_storage=counter_url, rate_limit_bad_keys="4/minute")
    second = replica(api, rate_limit_storage=counter_url, rate_limit_bad_keys="4/minute")
    for live in (first, second, first, second):
        assert live.call("GET", "/v1/jobs", None).status_code == 401
    for live in (first, second):
        assert_429(live.call("GET", "/v1/jobs", None), "bad-keys")
        assert live.call("GET", "/v1/jobs", "one").status_code == 200

    keys = redis.Redis.from_url(counter_url).keys("*")
    counters = [k.decode() for k in keys if k != b"eraser-test:claim"]
    assert counters
    assert all(k.startswith(KEY_PREFIX) for k in counters)
    assert all(redis.Redis.from_url(counter_url).ttl(k) > 0 for k in counters)


def test_in_memory_counters_are_per_process(api: SqliteApi) -> None:
    """``memory://``: each replica counts alone (why Redis is the default with a Redis
    broker)."""
    first = replica(api, rate_limit_storage="memory://", rate_limit_bad_keys="2/minute")
    second = replica(api, rate_limit_storage="memory://", rate_limit_bad_keys="2/minute")
    assert [first.call("GET", "/v1/jobs", None).status_code for _ in range(3)] == [401, 401, 429]
    assert second.call("GET", "/v1/jobs", None).status_code == 401


def test_a_call_is_allowed_again_after_retry_after(api: SqliteApi, counter_url: str) -> None:
    live = replica(api, rate_limit_storage=counter_url, rate_limit_submits="2 per 2 seconds")
    assert [submit(live, "one").status_code for _ in range(2)] == [202, 202]
    retry_after = assert_429(submit(live, "one"), "submits")
    assert retry_after <= 2
    time.sleep(retry_after + 0.1)
    assert submit(live, "one").status_code == 202


def test_an_unreachable_counter_lets_calls_through(api: SqliteApi) -> None:
    live = replica(api, rate_limit_storage="redis://127.0.0.1:1/0", rate_limit_bad_keys="1/minute")
    started = time.monotonic()
    assert [live.call("GET", "/v1/jobs", None).status_code for _ in range(3)] == [401] * 3
    assert submit(live, "one").status_code == 202
    assert time.monotonic() - started < 10
