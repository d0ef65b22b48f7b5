"""``make up`` brings the bakery estate up on the local PostgreSQL and Redis (API,
worker, reaper, Flower), and a job submitted as its banner suggests succeeds; it
touches only what it created."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, need_server
from tests.redis_dbs import REDIS_URL, claimed, need_redis
from worker.database import create_engine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_pair() -> Iterator[int]:
    """Three consecutive Redis databases held by this run: ``up`` uses the first and the
    next two (broker, results, the bakery's forecast cache)."""
    need_server("PostgreSQL", PG_ADMIN_URL)
    need_redis()
    with claimed(3, contiguous=True) as numbers:
        yield numbers[0]


def _settings(tmp_path: Path, broker_db: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
        "ERASER_UP_STATE": str(tmp_path / "up"),
        "ERASER_UP_PG": PG_ADMIN_URL,
        "ERASER_UP_REDIS": REDIS_URL,
        "ERASER_UP_PREFIX": f"eraser_t{os.getpid()}_up",
        "ERASER_UP_REDIS_DB": str(broker_db),
        "ERASER_UP_API_PORT": str(_free_port()),
        "ERASER_UP_FLOWER_PORT": str(_free_port()),
    }


SCRIPT = [sys.executable, str(ROOT / "deploy" / "up.py")]
OURS = sa.text("SELECT datname FROM pg_database WHERE datname LIKE :prefix")


@pytest.fixture
def deployment(tmp_path: Path, redis_pair: int) -> Iterator[dict[str, str]]:
    env = _settings(tmp_path, redis_pair)
    script = SCRIPT
    try:
        # --replace: the only keys in the two databases are this run's claim on them.
        started = subprocess.run(
            [*script, "up", "--tenants", "3", "--replace"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert "Eraser is up" in started.stdout
        yield env
    finally:
        subprocess.run([*script, "down", "--drop"], env=env, timeout=120, check=False)


def test_make_up_runs_a_job_through_api_worker_and_reaper(deployment: dict[str, str]) -> None:
    state = Path(deployment["ERASER_UP_STATE"])
    settings = {}
    for line in (state / "env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        settings[name] = value.strip("'")
    env = {**deployment, **settings}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "api.cli",
            "submit",
            "--subject-kind",
            "tenant",
            "--subject",
            "2",
            "--wait",
            "--json",
            "--timeout",
            "120",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "succeeded"' in done.stdout
    # the cache's keys and the bucket's objects went with the rows (25 keys, 6 reports)
    rows = {t["service"]: t["rows"] for t in json.loads(done.stdout)["tasks"]}
    assert (rows["forecast_cache"], rows["reports"]) == (25, 6), done.stdout

    api = f"http://127.0.0.1:{deployment['ERASER_UP_API_PORT']}"
    key = (state / "api-key").read_text().strip()
    answer = httpx.post(
        f"{api}/v1/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"subject_kind": "tenant", "subject_value": "3", "dry_run": True},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    flower = f"http://127.0.0.1:{deployment['ERASER_UP_FLOWER_PORT']}"
    assert httpx.get(flower, timeout=10).status_code == 401  # Flower needs its password


def _up(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_make_up_leaves_alone_what_it_did_not_create(tmp_path: Path, redis_pair: int) -> None:
    """A database of its name that someone else made, and a Redis database with someone
    else's keys: ``up`` (from a script: nobody to ask) refuses and names the setting
    that avoids them; ``down --drop`` drops only what ``up`` created."""
    env = _settings(tmp_path, redis_pair)
    prefix = env["ERASER_UP_PREFIX"]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    theirs = sa.make_url(PG_ADMIN_URL).set(database=f"{prefix}_jobs")
    keys = redis.Redis.from_url(f"{REDIS_URL}/{int(env['ERASER_UP_REDIS_DB']) + 1}")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{prefix}_jobs"')
        mine = create_engine(theirs.render_as_string(hide_password=False))
        with mine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE precious (id int)")
        mine.dispose()

        refused = _up(env, "up", "--tenants", "1")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"databases {prefix}_jobs exist and were not created by make up" in refused.stderr
        assert "ERASER_UP_PREFIX" in refused.stderr
        assert refused.stderr.count("\n") == 1
        with admin.connect() as conn:
            made = conn.execute(OURS, {"prefix": f"{prefix}_%"}).all()
        assert made == [(f"{prefix}_jobs",)]  # theirs, and nothing else was created
        mine = create_engine(theirs.render_as_string(hide_password=False))
        with mine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM precious").scalar() == 0
        mine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{prefix}_jobs" WITH (FORCE)')

        keys.set("someone-else", "1")
        refused = _up(env, "up", "--tenants", "1")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "holds 1 key(s) make up did not write" in refused.stderr
        assert "ERASER_UP_REDIS_DB" in refused.stderr
        assert keys.get("someone-else") == b"1"

        dropped = _up(env, "down", "--drop")
        assert dropped.returncode == 0, dropped.stderr
        assert "dropped 13 database(s)" in dropped.stdout  # the ones up created before
        assert keys.get("someone-else") == b"1"  # never flushed: not written by up
    finally:
        keys.delete("someone-else")
        keys.close()
        with admin.connect() as conn:
            for (name,) in conn.execute(OURS, {"prefix": f"{prefix}_%"}).all():
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()
