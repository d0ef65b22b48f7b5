"""API keys beyond their scopes: ``expires_at`` (401 after it, fine before), the keys
file a running API re-reads (a revoked key is refused within a second; a broken file
refuses every key with 503), ``eraser keys create|revoke|list``, console sessions that
end with their key, and failed authentications limited per client address (in
process: ``memory://``; the Redis-backed limits are in
``tests/integration/test_api_rate_limits.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli import EXIT_ERROR, EXIT_OK, main
from api.http import create_app
from api.keys import (
    RELOAD_CHECK_SECONDS,
    ApiKeys,
    KeysUnavailable,
    NewKey,
    Scope,
    create_key,
    read_keys_file,
    write_keys_file,
)
from models.settings import Settings
from models.store import queries
from tests.unit.sqlite_api import SqliteApi, sqlite_api

ALL = [Scope.READ, Scope.SUBMIT, Scope.ADMIN]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SqliteApi]:
    yield from sqlite_api(tmp_path)


def with_keys(api: SqliteApi, settings: Settings) -> SqliteApi:
    """The same job store and registry behind an app with other key settings."""
    app = create_app(settings, api.store, api.registry, metrics_cache_seconds=0)
    return SqliteApi(app, api.store, api.registry, settings, {})


def get(api: SqliteApi, secret: str | None, path: str = "/v1/jobs") -> httpx.Response:
    api.secrets["k"] = secret or ""
    return api.call("GET", path, "k" if secret else None)


def problem(answer: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["type"] == f"urn:eraser:problem:{kind}"
    return body


# --- expiry -------------------------------------------------------------------------------


def test_a_key_works_until_it_expires(api: SqliteApi) -> None:
    soon = create_key("soon", ALL, datetime.now(UTC) + timedelta(seconds=2))
    later = create_key("later", ALL, datetime.now(UTC) + timedelta(days=1))
    live = with_keys(api, Settings(api_keys=[soon.entry, later.entry]))
    assert get(live, soon.secret).status_code == 200
    time.sleep(2.1)
    body = problem(get(live, soon.secret), 401, "key-expired")
    assert body["title"] == "The API key has expired"
    assert soon.secret not in json.dumps(body)
    assert get(live, later.secret).status_code == 200


def test_a_naive_expiry_is_utc_and_survives_the_environment_variable() -> None:
    key = create_key("naive", ALL, datetime(2030, 1, 2, 3, 4, 5))  # naive: read as UTC
    text = json.dumps([key.entry.model_dump(mode="json")])
    (entry,) = Settings.model_validate({"api_keys": json.loads(text)}).api_keys
    assert entry.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert not entry.expired(datetime(2030, 1, 2, 3, 4, 4, tzinfo=UTC))
    assert entry.expired(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))


# --- the keys file --------------------------------------------------------------------------


def test_a_key_removed_from_the_file_is_refused_within_a_second(
    api: SqliteApi, tmp_path: Path
) -> None:
    file = tmp_path / "keys.json"
    kept, revoked = create_key("kept", ALL), create_key("revoked", ALL)
    write_keys_file(file, [kept.entry, revoked.entry])
    live = with_keys(api, Settings(api_keys_file=file))
    assert get(live, revoked.secret).status_code == 200

    write_keys_file(file, [kept.entry])
    started = time.monotonic()
    while get(live, revoked.secret).status_code == 200:
        assert time.monotonic() - started < RELOAD_CHECK_SECONDS + 0.5
        time.sleep(0.05)
    problem(get(live, revoked.secret), 401, "unauthorized")
    assert get(live, kept.secret).status_code == 200

    # A key added to the file is taken as quickly.
    added = create_key("added", ALL)
    write_keys_file(file, [kept.entry, added.entry])
    time.sleep(RELOAD_CHECK_SECONDS + 0.1)
    assert get(live, added.secret).status_code == 200


def test_a_broken_file_refuses_every_key_until_it_is_fixed(api: SqliteApi, tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    from_file, from_env = create_key("file", ALL), create_key("env", ALL)
    write_keys_file(file, [from_file.entry])
    live = with_keys(api, Settings(api_keys=[from_env.entry], api_keys_file=file))
    assert get(live, from_env.secret).status_code == 200

    file.write_text('[{"id": "half', encoding="utf-8")  # an editor's half-written save
    time.sleep(RELOAD_CHECK_SECONDS + 0.1)
    for secret in (from_file.secret, from_env.secret):
        body = problem(get(live, secret), 503, "keys-unavailable")
        assert str(file) not in json.dumps(body)  # the path is for the log, not the client

    write_keys_file(file, [from_file.entry])
    time.sleep(RELOAD_CHECK_SECONDS + 0.1)
    assert get(live, from_file.secret).status_code == 200
    assert get(live, from_env.secret).status_code == 200


def test_an_api_does_not_start_on_a_broken_keys_file(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    file.write_text('[{"id": "x"}]', encoding="utf-8")
    with pytest.raises(KeysUnavailable, match=r"keys\.json: 0\.id: String should match pattern"):
        ApiKeys([], file)
    with pytest.raises(KeysUnavailable, match="cannot read it"):
        ApiKeys([], tmp_path / "missing.json")


# --- eraser keys create | revoke | list -----------------------------------------------------


def test_the_cli_adds_lists_and_revokes_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "keys.json"
    args = ["keys", "create", "--name", "ops", "--scope", "jobs:read", "--file", str(file)]
    assert main([*args, "--expires-in", "90d", "--json"]) == EXIT_OK
    made = json.loads(capsys.readouterr().out)
    assert main([*args, "--json"]) == EXIT_OK
    second = json.loads(capsys.readouterr().out)

    first, other = read_keys_file(file)
    assert (first.id, other.id) == (made["id"], second["id"])
    assert first.expires_at is not None
    in_90_days = datetime.now(UTC) + timedelta(days=90)
    assert abs((first.expires_at - in_90_days).total_seconds()) < 60
    assert other.expires_at is None
    assert ApiKeys([], file).authenticate(made["secret"]) == first
    assert file.stat().st_mode & 0o077 == 0  # hashes only, yet not for every reader

    assert main(["keys", "list", "--file", str(file)]) == EXIT_OK
    listed = capsys.readouterr().out
    assert made["id"] in listed
    assert "expires 20" in listed
    assert "sha256" not in listed

    assert main(["keys", "revoke", made["id"], "--file", str(file)]) == EXIT_OK
    assert [e.id for e in read_keys_file(file)] == [second["id"]]
    assert main(["keys", "revoke", made["id"], "--file", str(file)]) == EXIT_ERROR
    assert f"no key {made['id']}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--expires-in", "soon"], "--expires-in takes a number and a unit"),
        (["--expires-in", "1d", "--expires-at", "2030-01-01"], "not both"),
    ],
)
def test_the_cli_refuses_a_bad_expiry(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "x", "--scope", "jobs:read", *extra]) == EXIT_ERROR
    assert message in capsys.readouterr().err


def test_the_printed_entry_with_an_expiry_is_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["keys", "create", "--name", "x", "--scope", "jobs:read", "--expires-at", "2031-02-03"]
    assert main(args) == EXIT_OK
    entry = json.loads(capsys.readouterr().out.splitlines()[-1])
    (parsed,) = Settings.model_validate({"api_keys": [entry]}).api_keys
    assert parsed.expires_at == datetime(2031, 2, 3, tzinfo=UTC)


# --- the console -------------------------------------------------------------------------------


def console_session(live: SqliteApi, secret: str) -> Any:
    """Sign in; returns a function that fetches a console page with the session."""
    import asyncio  # noqa: PLC0415

    async def signed_in() -> httpx.AsyncClient:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=live.app), base_url="http://e")
        answer = await http.post("/console/sign-in", data={"key": secret})
        assert answer.status_code == 303, answer.text
        return http

    loop = asyncio.new_event_loop()
    http = loop.run_until_complete(signed_in())

    def page() -> int:
        return loop.run_until_complete(http.get("/console/jobs")).status_code

    page.close = lambda: (loop.run_until_complete(http.aclose()), loop.close())  # type: ignore[attr-defined]
    return page


def test_revoked_and_expired_keys_end_their_console_sessions(
    api: SqliteApi, tmp_path: Path
) -> None:
    file = tmp_path / "keys.json"
    revoked = create_key("revoked", ALL)
    expiring = create_key("expiring", ALL, datetime.now(UTC) + timedelta(seconds=2))
    kept = create_key("kept", ALL)
    write_keys_file(file, [revoked.entry, expiring.entry, kept.entry])
    live = with_keys(api, Settings(api_keys_file=file))
    pages = {k.entry.name: console_session(live, k.secret) for k in (revoked, expiring, kept)}
    try:
        assert {name: page() for name, page in pages.items()} == dict.fromkeys(pages, 200)
        write_keys_file(file, [expiring.entry, kept.entry])
        time.sleep(2.1)
        # Signed out: the console sends the browser to its sign-in form.
        assert {name: page() for name, page in pages.items()} == {
            "revoked": 303,
            "expiring": 303,
            "kept": 200,
        }
        assert pages["kept"]() == 200
    finally:
        for page in pages.values():
            page.close()


def test_an_expired_key_cannot_sign_in_to_the_console(api: SqliteApi) -> None:
    expired = create_key("old", ALL, datetime.now(UTC) - timedelta(seconds=1))
    live = with_keys(api, Settings(api_keys=[expired.entry]))
    answer = live.call("POST", "/console/sign-in", None, data={"key": expired.secret})
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers


# --- failed authentications per address -----------------------------------------------------


def test_repeated_bad_keys_get_429_and_a_valid_key_still_works(api: SqliteApi) -> None:
    good: NewKey = create_key("good", ALL)
    expired = create_key("old", ALL, datetime.now(UTC) - timedelta(seconds=1))
    live = with_keys(
        api, Settings(api_keys=[good.entry, expired.entry], rate_limit_bad_keys="5/minute")
    )
    attempts = [None, "ek_nope", expired.secret, "Bearer-less", good.secret + "x"]
    assert [get(live, a).status_code for a in attempts] == [401] * 5
    for attempt in attempts:
        refused = get(live, attempt)
        body = problem(refused, 429, "rate-limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "bad-keys" in body["detail"]
    assert get(live, good.secret).status_code == 200


def test_a_limit_can_be_turned_off(api: SqliteApi) -> None:
    live = with_keys(api, Settings(rate_limit_bad_keys=""))
    assert {get(live, "ek_nope").status_code for _ in range(40)} == {401}


@pytest.mark.parametrize("value", ["lots", "0/minute", "10/fortnight"])
def test_an_unreadable_limit_is_a_settings_error(value: str) -> None:
    with pytest.raises(ValueError, match="rate_limit_submits"):
        Settings(rate_limit_submits=value)


def test_failed_console_sign_ins_count_as_bad_keys(api: SqliteApi) -> None:
    good = create_key("good", ALL)
    live = with_keys(api, Settings(api_keys=[good.entry], rate_limit_bad_keys="3/minute"))

    def sign_in(secret: str) -> httpx.Response:
        return live.call("POST", "/console/sign-in", None, data={"key": secret})

    assert [sign_in("ek_guess").status_code for _ in range(3)] == [401] * 3
    refused = sign_in("ek_guess")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "text/html" in refused.headers["content-type"]
    assert sign_in(good.secret).status_code == 303
    problem(get(live, "ek_guess"), 429, "rate-limited")  # one budget with the API's


def test_console_previews_count_against_the_keys_limits(api: SqliteApi) -> None:
    """A dry run from the console costs what ``POST /v1/jobs`` with ``dry_run`` costs:
    one submit and one expensive call of the operator's key; past the limit, a page
    with ``Retry-After`` and no job."""
    import asyncio  # noqa: PLC0415
    import re  # noqa: PLC0415

    operator = create_key("operator", ALL)
    live = with_keys(api, Settings(api_keys=[operator.entry], rate_limit_expensive="2/minute"))

    async def previews() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=live.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
            signed = await http.post("/console/sign-in", data={"key": operator.secret})
            assert signed.status_code == 303, signed.text
            form = (await http.get("/console/erase")).text
            found = re.search(r'name="csrf" value="([^"]+)"', form)
            assert found is not None
            fields = {"csrf": found[1], "kind": "tenant", "value": "t-limited"}
            return [await http.post("/console/erase", data=fields) for _ in range(3)]

    answers = asyncio.run(previews())
    assert [a.status_code for a in answers] == [303, 303, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert "text/html" in answers[2].headers["content-type"]
    assert "t-limited" not in answers[2].text
    with live.store.transaction() as session:
        assert len(queries.list_jobs(session, limit=10).jobs) == 2
