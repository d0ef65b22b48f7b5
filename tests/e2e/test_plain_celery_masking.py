"""Plain-Celery intake, with a real ``eraser worker`` on Redis: a request whose
``kwargsrepr`` shows the subject's value (Celery's default) is refused, dead-lettered
with the reason only; the same request sent the right way (``submit_via_celery``,
``kwargsrepr`` masked) becomes a job. Neither the dead letter nor the worker's log
holds the value."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from celery import Celery
from eraser_client import submit_via_celery

from models import migrate
from models.keyring import new_secrets
from models.settings import Settings
from models.store.database import JobStore
from models.store.sealing import subject_seal
from models.store.tables import Job
from tasks.requests import UNMASKED
from tests.e2e.apiserver import _spawn, _stop, decode_message
from tests.redis_dbs import claimed, need_redis, pool
from worker.database import create_engine

pytestmark = pytest.mark.slow

#: The subject: long enough not to appear anywhere by chance.
VALUE = "tenant-5f2c91d7-privacy"

REGISTRY = '[subjects.tenant]\ncolumn = "tenant_id"\n[services.shop]\nurl_env = "MASK_SHOP_URL"\n'


@dataclass
class Deployment:
    store: JobStore
    client: Celery
    broker: redis.Redis
    log: Path


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    need_redis()
    shop = tmp_path / "shop.db"
    with sqlite3.connect(shop) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL)")
        conn.executemany("INSERT INTO customers VALUES (?, ?)", [(1, VALUE), (2, "other")])
    (tmp_path / "services.toml").write_text(REGISTRY, encoding="utf-8")
    store_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    engine = create_engine(store_url)
    migrate.upgrade(engine)
    secrets = new_secrets()
    with claimed(2) as (broker_db, result_db):
        broker_url = pool().url_of(broker_db)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
            **secrets,
            "ERASER_DATABASE_URL": store_url,
            "ERASER_BROKER_URL": broker_url,
            "ERASER_RESULT_BACKEND": pool().url_of(result_db),
            "ERASER_CONFIG": str(tmp_path / "services.toml"),
            "MASK_SHOP_URL": f"sqlite:///{shop}",
        }
        log = tmp_path / "worker.log"
        worker = _spawn(
            ["worker", "-c", "1", "-Q", "eraser,eraser.requests", "--loglevel", "INFO"], env, log
        )
        client = Celery("mask-client", broker=broker_url, set_as_current=False)
        broker = redis.Redis.from_url(broker_url)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            broker_url=broker_url,
            **{k.removeprefix("ERASER_").lower(): v for k, v in secrets.items()},
        )
        try:
            deadline = time.monotonic() + 60
            while "ready." not in log.read_text(encoding="utf-8", errors="replace"):
                assert worker.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.2)
            yield Deployment(JobStore(engine, subject_seal(settings)), client, broker, log)
        finally:
            client.close()
            broker.close()
            _stop(worker)
            engine.dispose()


def _rejections(deployment: Deployment) -> list[dict[str, Any]]:
    messages = [
        decode_message(raw) for raw in deployment.broker.lrange("eraser.dead_letter", 0, -1)
    ]
    return [
        m["body"]
        for m in messages
        if m["headers"].get("x-eraser-rejected") == "eraser.submit_request"
    ]


def _job_by_key(deployment: Deployment, key: str, timeout: float = 60) -> Job | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with deployment.store.transaction() as session:
            job = session.scalar(sa.select(Job).where(Job.idempotency_key == key))
            if job is not None and job.finished_at is not None:
                return job
        time.sleep(0.2)
    return None


def test_an_unmasked_request_is_refused_and_a_masked_one_becomes_a_job(
    deployment: Deployment,
) -> None:
    fields = {"subject_kind": "tenant", "subject_value": VALUE, "idempotency_key": "unmasked"}
    # Celery's default: kwargsrepr is a repr of the arguments, value included.
    deployment.client.send_task("eraser.submit_request", kwargs=fields, queue="eraser.requests")
    deadline = time.monotonic() + 60
    while not _rejections(deployment) and time.monotonic() < deadline:
        time.sleep(0.2)
    rejected = _rejections(deployment)
    assert rejected == [{"task": "eraser.submit_request", "reason": UNMASKED}]
    assert _job_by_key(deployment, "unmasked", timeout=1) is None

    # The one right way: the arguments masked.
    submit_via_celery(deployment.client, "tenant", VALUE, idempotency_key="masked")
    job = _job_by_key(deployment, "masked")
    assert job is not None
    assert (job.status, job.total_rows, job.subject_value) == ("succeeded", 1, None)

    raw_letters = b"".join(deployment.broker.lrange("eraser.dead_letter", 0, -1))
    assert VALUE.encode() not in raw_letters
    log = deployment.log.read_text(encoding="utf-8", errors="replace")
    assert "request rejected: refused: the request's arguments are not masked" in log
    assert VALUE not in log
    assert json.dumps(VALUE) not in log
