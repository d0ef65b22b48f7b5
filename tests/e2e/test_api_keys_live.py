"""API keys and rate limits against a running ``eraser api`` process (uvicorn, embedded
mode: a SQLite job store and a SQLite target database; the rate limits counted in a
Redis database claimed for the test): ``eraser keys revoke`` takes effect without a
restart, an expiring key is refused once it expires, and past the default limits the
process answers 429 with ``Retry-After``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.keys import RELOAD_CHECK_SECONDS, Scope, create_key, write_keys_file
from models.settings import Settings
from tests.e2e.apiserver import free_port
from tests.redis_dbs import claimed, need_redis, pool

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = """
[subjects.tenant]
column = "tenant_id"

[services.shop]
url_env = "LIVE_SHOP_URL"
"""


@dataclass
class LiveApi:
    url: str
    env: dict[str, str]
    keys_file: Path
    #: Key name -> secret.
    secrets: dict[str, str]
    ids: dict[str, str]
    log: Path

    def get(self, path: str, secret: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.get(self.url + path, headers=headers, timeout=30)

    def eraser(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            cwd=ROOT,
            check=False,
        )


def environment(tmp: Path, counter_url: str) -> dict[str, str]:
    shop = tmp / "shop.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL)")
        db.executemany("INSERT INTO customers (tenant_id) VALUES (?)", [("t-1",), ("t-2",)])
    (tmp / "services.toml").write_text(REGISTRY, encoding="utf-8")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
        "ERASER_DATABASE_URL": f"sqlite:///{tmp / 'jobs.db'}",
        "ERASER_CONFIG": str(tmp / "services.toml"),
        "ERASER_API_KEYS_FILE": str(tmp / "keys.json"),
        "ERASER_RATE_LIMIT_STORAGE": counter_url,
        "LIVE_SHOP_URL": f"sqlite:///{shop}",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    need_redis()
    tmp = tmp_path_factory.mktemp("live-keys")
    with claimed(1) as (number,):
        env = environment(tmp, pool().url_of(number))
        keys = {name: create_key(f"live-{name}", list(Scope)) for name in ("kept", "revoked")}
        keys_file = tmp / "keys.json"
        write_keys_file(keys_file, [k.entry for k in keys.values()])
        port, log = free_port(), tmp / "api.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "api", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = LiveApi(
            f"http://127.0.0.1:{port}",
            env,
            keys_file,
            {n: k.secret for n, k in keys.items()},
            {n: k.id for n, k in keys.items()},
            log,
        )
        try:
            _wait_ready(server, process)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_ready(server: LiveApi, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the API did not start:\n" + server.log.read_text(errors="replace"))
        time.sleep(0.1)


def test_a_revoked_key_is_refused_without_a_restart(live: LiveApi) -> None:
    assert live.get("/v1/jobs", live.secrets["revoked"]).status_code == 200
    done = live.eraser("keys", "revoke", live.ids["revoked"])  # ERASER_API_KEYS_FILE
    assert done.returncode == 0, done.stderr
    revoked_at = time.monotonic()
    while (answer := live.get("/v1/jobs", live.secrets["revoked"])).status_code == 200:
        assert time.monotonic() - revoked_at < RELOAD_CHECK_SECONDS + 1, "still accepted"
        time.sleep(0.05)
    assert answer.status_code == 401
    assert answer.json()["type"] == "urn:eraser:problem:unauthorized"
    assert live.get("/v1/jobs", live.secrets["kept"]).status_code == 200


def test_a_key_created_with_an_expiry_works_until_then(live: LiveApi) -> None:
    done = live.eraser(
        "keys", "create", "--name", "brief", "--scope", "jobs:read", "--expires-in", "1m", "--json"
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    time.sleep(RELOAD_CHECK_SECONDS + 0.2)
    assert live.get("/v1/jobs", made["secret"]).status_code == 200
    # Move its expiry to two seconds from now (as an operator editing the file would).
    entries = json.loads(live.keys_file.read_text(encoding="utf-8"))
    soon = time.time() + 2
    for entry in entries:
        if entry["id"] == made["id"]:
            entry["expires_at"] = soon
    keys = Settings.model_validate({"api_keys": entries}).api_keys
    write_keys_file(live.keys_file, keys)
    time.sleep(max(0.0, soon - time.time()) + 0.1)
    answer = live.get("/v1/jobs", made["secret"])
    assert answer.status_code == 401
    assert answer.json()["type"] == "urn:eraser:problem:key-expired"
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_dry_runs_past_the_default_limit_get_429(live: LiveApi) -> None:
    """``ERASER_RATE_LIMIT_EXPENSIVE`` defaults to 20 a minute per key."""
    body = {"subject_kind": "tenant", "subject_value": "t-1", "dry_run": True}
    headers = {"Authorization": f"Bearer {live.secrets['kept']}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as http:
        codes = [http.post("/v1/jobs", json=body).status_code for _ in range(20)]
        assert codes == [202] * 20
        refused = http.post("/v1/jobs", json=body)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["type"] == "urn:eraser:problem:rate-limited"
        assert http.get("/v1/services", params={"plans": "true"}).status_code == 429
        assert http.get("/v1/services").status_code == 200


def test_600_bad_keys_get_429_past_the_default_limit(live: LiveApi) -> None:
    """``ERASER_RATE_LIMIT_BAD_KEYS`` defaults to 30 a minute per address."""
    with httpx.Client(base_url=live.url, timeout=30) as http:
        codes = [
            http.get("/v1/jobs", headers={"Authorization": f"Bearer ek_guess{n}_x"}).status_code
            for n in range(600)
        ]
        # The earlier tests' revoked and expired keys failed from this address too.
        allowed = codes.count(401)
        assert 25 <= allowed <= 30
        assert codes == [401] * allowed + [429] * (600 - allowed)
        refused = http.get("/v1/jobs")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
    assert live.get("/v1/jobs", live.secrets["kept"]).status_code == 200


def test_the_served_document_declares_bearer_and_429(live: LiveApi) -> None:
    document = httpx.get(live.url + "/openapi.json", timeout=30).json()
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert "429" in document["paths"]["/v1/jobs"]["post"]["responses"]


def test_an_api_with_a_broken_keys_file_does_not_start(tmp_path: Path, live: LiveApi) -> None:
    broken = tmp_path / "keys.json"
    broken.write_text("not json", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "api", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env={**live.env, "ERASER_API_KEYS_FILE": str(broken)},
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "keys.json" in done.stderr
    assert "Traceback" not in done.stderr
