"""``/v1/dead-letters`` over a SQLite job store: listing (open ones, all, one job's)
and the replay refusals (unknown, already replayed), as problem documents."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.store.tables import DeadLetter
from tests.unit.sqlite_api import SqliteApi, sqlite_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SqliteApi]:
    yield from sqlite_api(tmp_path)


def letter(api: SqliteApi, job_id: str, service: str, replayed: bool = False) -> int:
    with api.store.transaction() as session:
        row = DeadLetter(
            job_id=job_id,
            service=service,
            reason="permanent",
            error="OperationalError: connection refused",
            attempts=3,
            replayed_at=datetime(2024, 1, 1, tzinfo=UTC) if replayed else None,
            replayed_by="cli" if replayed else None,
        )
        session.add(row)
        session.flush()
        return row.id


def test_listing(api: SqliteApi) -> None:
    one, two = api.submit("1").id, api.submit("2").id
    first = letter(api, one, "shop")
    done = letter(api, one, "crm", replayed=True)
    other = letter(api, two, "shop")

    def ids(**params: object) -> list[int]:
        answer = api.call("GET", "/v1/dead-letters", params=params)
        assert answer.status_code == 200, answer.text
        return [d["id"] for d in answer.json()]

    assert ids() == [other, first]  # newest first, replayed ones left out
    assert ids(include_replayed=True) == [other, done, first]
    assert ids(job_id=one, include_replayed=True) == [done, first]
    assert ids(limit=1) == [other]
    shown = api.call("GET", "/v1/dead-letters").json()[0]
    assert shown["error"] == "OperationalError: connection refused"
    assert "traceback" not in shown


def test_dead_letters_need_the_admin_scope(api: SqliteApi) -> None:
    answer = api.call("GET", "/v1/dead-letters", "reader")
    assert answer.status_code == 403
    assert answer.json()["type"] == "urn:eraser:problem:forbidden"


def test_replay_refusals(api: SqliteApi) -> None:
    done = letter(api, api.submit().id, "shop", replayed=True)
    answer = api.call("POST", f"/v1/dead-letters/{done}/replay")
    assert answer.status_code == 409
    assert answer.json()["type"] == "urn:eraser:problem:already-replayed"
    answer = api.call("POST", "/v1/dead-letters/987654/replay")
    assert answer.status_code == 404
    assert answer.json()["type"] == "urn:eraser:problem:dead-letter-not-found"
