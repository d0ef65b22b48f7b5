"""Completion events: the event on the ``eraser.events`` queue, and the webhook POST
signed with HMAC-SHA256 and retried after a 5xx (SQLite job store, in-process broker,
a real HTTP server on loopback)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from models import migrate
from models.messages import ErasureRequest
from models.registry import load_registry
from models.settings import Settings
from models.store.database import JobStore
from tasks.erase import execute_task
from tasks.events import EVENTS_QUEUE, announce_job
from tasks.finalize import finalize
from tasks.resources import Resources, reset_resources, use_resources
from tasks.submit import submit
from worker.app import app
from worker.database import create_engine

SUBJECT = "tenant-secret-77"


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    answers: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((dict(self.headers), body))
        self.send_response(Hook.answers.pop(0) if Hook.answers else 200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def finished_job(
    tmp_path: Path, include_value: bool, in_worker: bool = False
) -> tuple[JobStore, Any, str]:
    (tmp_path / "services.toml").write_text(
        "[subjects.tenant]\n"
        'column = "tenant_id"\n'
        f"events_include_value = {'true' if include_value else 'false'}\n"
        "[services.shop]\n"
        'url_env = "SHOP_URL"\n',
        encoding="utf-8",
    )
    conn = sqlite3.connect(tmp_path / "shop.db")
    conn.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL);")
    conn.executemany("INSERT INTO customers VALUES (?, ?)", [(1, SUBJECT), (2, "other")])
    conn.commit()
    conn.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    store = JobStore(engine)
    registry = load_registry(tmp_path / "services.toml")
    shop = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value=SUBJECT))
    execute_task(store, registry, Settings(), job.id, "shop", engine_for=lambda _s: shop)
    if in_worker:  # the worker that ends the job builds and publishes its event
        use_resources(Resources(settings=Settings(), registry=registry, store=store))
        try:
            finalize(store, job.id, in_worker=True)
        finally:
            reset_resources()
    else:
        finalize(store, job.id)
    shop.dispose()
    return store, registry, job.id


def drain_events() -> list[dict[str, Any]]:
    events = []
    with app.connection_for_read() as conn:
        queue = EVENTS_QUEUE(conn.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True, accept=["json"])) is not None:
            events.append(message.decode())
    return events


def test_the_event_is_queued_and_the_webhook_signed_and_retried(tmp_path: Path, hook: str) -> None:
    assert app.conf.broker_url.startswith("memory://")
    drain_events()
    store, registry, job_id = finished_job(tmp_path, include_value=False)
    settings = Settings(webhook_url=hook, webhook_secret="hook-secret")  # type: ignore[arg-type]  # noqa: S106
    use_resources(Resources(settings=settings, registry=registry, store=store))
    Hook.answers = [503]  # the first delivery fails: retried
    try:
        announce_job.apply(args=(job_id,))
    finally:
        reset_resources()
        store.dispose()
    assert len(Hook.received) == 2
    headers, body = Hook.received[-1]
    expected = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Eraser-Signature"] == expected
    event = json.loads(body)
    assert event["job_id"] == job_id
    assert event["status"] == "succeeded"
    assert event["total_rows"] == 1
    assert event["services"]["shop"] == {"status": "succeeded", "rows": 1, "verified": True}
    assert SUBJECT not in body.decode()
    queued = drain_events()
    assert [e["job_id"] for e in queued] == [job_id]  # published once, not per retry
    assert SUBJECT not in json.dumps(queued)


def test_the_value_is_in_the_event_only_when_the_registry_allows_it(tmp_path: Path) -> None:
    drain_events()
    store, registry, job_id = finished_job(tmp_path, include_value=True, in_worker=True)
    assert [e.get("subject_value") for e in drain_events()] == [SUBJECT]
    # Built later (the webhook's task), the event has no value: the succeeded job
    # no longer keeps it.
    use_resources(Resources(settings=Settings(), registry=registry, store=store))
    try:
        announce_job.apply(args=(job_id,))
    finally:
        reset_resources()
        store.dispose()
    queued = drain_events()
    assert [e["job_id"] for e in queued] == [job_id]
    assert [e.get("subject_value") for e in queued] == [None]
