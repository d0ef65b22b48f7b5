"""``make up`` brings the bakery estate up on the local PostgreSQL and Redis (API,
worker, reaper, Flower), and a job submitted as its banner suggests succeeds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_ADMIN_URL, need_server
from tests.redis_dbs import REDIS_URL, claimed, need_redis

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, str]]:
    need_server("PostgreSQL", PG_ADMIN_URL)
    need_redis()
    # deploy/up.py uses the database it is given and the next one (and flushes both).
    with claimed(2, contiguous=True) as redis_dbs:
        yield from _up(tmp_path, redis_dbs[0])


def _up(tmp_path: Path, broker_db: int) -> Iterator[dict[str, str]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
        "ERASER_UP_STATE": str(tmp_path / "up"),
        "ERASER_UP_PG": PG_ADMIN_URL,
        "ERASER_UP_REDIS": REDIS_URL,
        "ERASER_UP_PREFIX": f"eraser_t{os.getpid()}_up",
        "ERASER_UP_REDIS_DB": str(broker_db),
        "ERASER_UP_API_PORT": str(_free_port()),
        "ERASER_UP_FLOWER_PORT": str(_free_port()),
    }
    script = [sys.executable, str(ROOT / "deploy" / "up.py")]
    try:
        started = subprocess.run(
            [*script, "up", "--tenants", "3"],
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
