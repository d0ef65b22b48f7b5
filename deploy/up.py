"""``make up`` / ``make down``: the bakery estate as a real deployment on this machine.

``up`` uses the local PostgreSQL (``ERASER_UP_PG``, default
``postgresql://root@127.0.0.1:5432/postgres``) and Redis (``ERASER_UP_REDIS``, default
``redis://127.0.0.1:6379``, databases 1 and 2): it creates a job store
``eraser_up_jobs`` and twelve service databases ``eraser_up_<service>``, seeds five
bakeries, writes ``.up/env`` (every setting, a fresh admin API key, a certificate key,
a Flower password), and starts the API, a worker, the reaper and Flower in the
background (logs and pids in ``.up/``). Flower listens on a free loopback port with its
API open; ``eraser flower-proxy`` (user admin, read-only) is the one way in, on
``ERASER_UP_FLOWER_PORT``. Then it prints the URLs and what to try.

``down`` stops them; ``down --drop`` also drops the databases and flushes the Redis
databases.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.keys import Scope, create_key  # noqa: E402
from examples.bakery import seed as bakery  # noqa: E402
from examples.bakery.schema import SERVICES  # noqa: E402
from models import migrate  # noqa: E402
from models.keyring import new_secrets  # noqa: E402
from worker.database import create_engine  # noqa: E402

# Overridable so that a test can run a second deployment beside yours.
STATE = Path(os.environ.get("ERASER_UP_STATE", str(ROOT / ".up")))
PG = os.environ.get("ERASER_UP_PG", "postgresql://root@127.0.0.1:5432/postgres")
REDIS = os.environ.get("ERASER_UP_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("ERASER_UP_PREFIX", "eraser_up")
BROKER_DB = int(os.environ.get("ERASER_UP_REDIS_DB", "1"))
RESULT_DB = BROKER_DB + 1
API_PORT = int(os.environ.get("ERASER_UP_API_PORT", "8000"))
FLOWER_PORT = int(os.environ.get("ERASER_UP_FLOWER_PORT", "5555"))
PROCESSES = ("api", "worker", "beat", "flower", "flower-proxy")


def _db_url(name: str) -> str:
    return sa.make_url(PG).set(database=name).render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _databases() -> list[str]:
    return [f"{PREFIX}_jobs", *(f"{PREFIX}_{s}" for s in SERVICES)]


def up(tenants: int) -> int:
    STATE.mkdir(exist_ok=True)
    if any((STATE / f"{p}.pid").exists() for p in PROCESSES):
        print("already up (make down first)", file=sys.stderr)
        return 1
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in _databases():
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    urls = {s: _db_url(f"{PREFIX}_{s}") for s in SERVICES}
    started = time.monotonic()
    rows = bakery.seed(urls, tenants=tenants)
    print(
        f"seeded {tenants} bakeries in 12 PostgreSQL databases: {sum(rows.values()):,} rows "
        f"({time.monotonic() - started:.1f}s)"
    )
    store = create_engine(_db_url(f"{PREFIX}_jobs"))
    migrate.upgrade(store)
    store.dispose()
    for number in (BROKER_DB, RESULT_DB):
        redis.Redis.from_url(f"{REDIS}/{number}").flushdb()

    key = create_key("make-up admin", [Scope.SUBMIT, Scope.READ, Scope.ADMIN])
    flower_password = secrets.token_urlsafe(12)
    flower_hash = hashlib.sha256(flower_password.encode()).hexdigest()
    flower_internal = _free_port()
    env = {
        "ERASER_DATABASE_URL": _db_url(f"{PREFIX}_jobs"),
        "ERASER_BROKER_URL": f"{REDIS}/{BROKER_DB}",
        "ERASER_RESULT_BACKEND": f"{REDIS}/{RESULT_DB}",
        "ERASER_CONFIG": str(bakery.REGISTRY_PATH),
        "ERASER_API_KEYS": json.dumps([key.entry.model_dump()]),
        **new_secrets(),  # the certificate signing key, the pepper, the store key
        "ERASER_FLOWER_USERS": f"admin:sha256:{flower_hash}",
        "ERASER_FLOWER_UPSTREAM": f"http://127.0.0.1:{flower_internal}",
        **bakery.env_for(urls),
    }
    (STATE / "env").write_text(
        "".join(f"export {k}='{v}'\n" for k, v in sorted(env.items())), encoding="utf-8"
    )
    (STATE / "api-key").write_text(key.secret + "\n", encoding="utf-8")
    (STATE / "flower-password").write_text(flower_password + "\n", encoding="utf-8")
    os.chmod(STATE / "api-key", 0o600)
    os.chmod(STATE / "flower-password", 0o600)

    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    python = sys.executable
    commands = {
        "api": [python, "-m", "api.cli", "api", "--port", str(API_PORT)],
        "worker": [python, "-m", "api.cli", "worker", "-c", "2", "--loglevel", "INFO"],
        "beat": [python, "-m", "api.cli", "beat"],
        "flower": [
            python,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "flower",
            f"--port={flower_internal}",
            "--address=127.0.0.1",
            "--read_only",
        ],
        "flower-proxy": [python, "-m", "api.cli", "flower-proxy", "--port", str(FLOWER_PORT)],
    }
    # Flower's API answers without credentials: only on loopback, behind the proxy.
    only = {"flower": {"FLOWER_UNAUTHENTICATED_API": "true"}}
    for name, argv in commands.items():
        with (STATE / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own commands
                argv,
                env={**full_env, **only.get(name, {})},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (STATE / f"{name}.pid").write_text(str(proc.pid), encoding="utf-8")
    deadline = time.monotonic() + 60
    # The proxy's /healthcheck is Flower's: ready means both are.
    for name, url in (
        ("api", f"http://127.0.0.1:{API_PORT}/readyz"),
        ("flower", f"http://127.0.0.1:{FLOWER_PORT}/healthcheck"),
    ):
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print(f"{name} did not become ready; see .up/{name}*.log", file=sys.stderr)
                return 1
            time.sleep(0.5)
    print(f"""
Eraser is up (logs and pids in .up/):
  API      http://127.0.0.1:{API_PORT}/docs   (key in .up/api-key)
  Flower   http://127.0.0.1:{FLOWER_PORT}     (read-only: user admin, .up/flower-password)
  worker, reaper (eraser beat) running; job store {PREFIX}_jobs; Redis dbs {BROKER_DB}/{RESULT_DB}

Try:
  set -a; . .up/env; set +a
  .venv/bin/eraser submit --subject-kind tenant --subject 3 --wait
  curl -s -X POST localhost:{API_PORT}/v1/jobs -H "Authorization: Bearer $(cat .up/api-key)" \\
       -H 'Content-Type: application/json' -d '{{"subject_kind":"tenant","subject_value":"4"}}'
  make down            # stop (make down DROP=1 also drops the databases)
""")
    return 0


def down(drop: bool) -> int:
    for name in PROCESSES:
        pidfile = STATE / f"{name}.pid"
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        pidfile.unlink()
    time.sleep(1)
    if drop:
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in _databases():
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        for number in (BROKER_DB, RESULT_DB):
            redis.Redis.from_url(f"{REDIS}/{number}").flushdb()
    print("down" + (" (databases dropped)" if drop else ""))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="the bakery estate as a local deployment")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up")
    start.add_argument("--tenants", type=int, default=5)
    stop = sub.add_parser("down")
    stop.add_argument("--drop", action="store_true")
    args = parser.parse_args()
    return up(args.tenants) if args.command == "up" else down(args.drop)


if __name__ == "__main__":
    sys.exit(main())
