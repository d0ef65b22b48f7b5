"""``eraser flower-proxy``: a real Flower (no authentication of its own, its API open,
not in read-only mode: the proxy alone must hold) behind the real proxy command.
Writes are proved not to reach Flower by the broker's queues: the same POST sent to
Flower directly does enqueue a task."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api.cli import main
from api.flowerproxy import BadFlowerUser, NoFlowerUsers, authenticated, is_read_route, parse_users
from tests.redis_dbs import claimed, need_redis, pool

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = secrets.token_urlsafe(16)
USERS = f"alice:sha256:{hashlib.sha256(PASSWORD.encode()).hexdigest()}"
GOOD = ("alice", PASSWORD)
#: The header a browser sends for GOOD.
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
A_TASK_ID = "3f1e1d6c-0000-4000-8000-000000000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(argv: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"{argv[2:5]} did not start: {stderr[-2000:]}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    if proc.stderr:
        proc.stderr.close()


def queued(broker: redis.Redis) -> int:
    """Messages waiting in every queue of the test broker."""
    return sum(int(broker.llen(key)) for key in broker.scan_iter() if broker.type(key) == b"list")


@pytest.fixture(scope="module")
def redis_dbs() -> Iterator[list[int]]:
    """Broker and result databases of this module's own (claimed, emptied after)."""
    need_redis()
    with claimed(2) as numbers:
        yield numbers


@pytest.fixture
def broker(redis_dbs: list[int]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(pool().url_of(redis_dbs[0]))
    yield client
    client.close()


@pytest.fixture(scope="module")
def flower(redis_dbs: list[int]) -> Iterator[str]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ERASER_", "FLOWER_"))},
        "ERASER_BROKER_URL": pool().url_of(redis_dbs[0]),
        "ERASER_RESULT_BACKEND": pool().url_of(redis_dbs[1]),
        "FLOWER_UNAUTHENTICATED_API": "true",
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "flower"]
    argv += [f"--port={port}", "--address=127.0.0.1"]
    url = f"http://127.0.0.1:{port}"
    proc = _start(argv, env, f"{url}/healthcheck")
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def proxy(flower: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
        "ERASER_FLOWER_USERS": f"bob:sha256:{'0' * 64}, {USERS}",
        "ERASER_FLOWER_UPSTREAM": flower,
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "api.cli", "flower-proxy", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    proc = _start(argv, env, f"{url}/healthcheck")
    try:
        yield url
    finally:
        _stop(proc)


# --- authentication -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "auth",
    [
        None,  # no credentials
        ("alice", "wrong"),  # a known user, a wrong password
        ("mallory", PASSWORD),  # the right password, an unknown user
        ("alice", PASSWORD.upper()),  # case matters
    ],
)
@pytest.mark.parametrize("path", ["/", "/api/workers", "/api/worker/shutdown/w1"])
def test_no_page_without_the_right_credentials(
    proxy: str, auth: tuple[str, str] | None, path: str
) -> None:
    answer = httpx.get(proxy + path, auth=auth, timeout=10)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic ")
    assert "Flower" not in answer.text


@pytest.mark.slow
def test_the_dashboard_and_the_api_read_through_the_proxy(proxy: str) -> None:
    page = httpx.get(proxy + "/", auth=GOOD, timeout=30)
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    assert "Flower" in page.text
    workers = httpx.get(proxy + "/api/workers", auth=GOOD, timeout=30)
    assert workers.status_code == 200
    assert workers.json() == {}  # no worker on this broker
    # Flower's open API answers with `Access-Control-Allow-Origin: *`; the proxy drops it.
    assert not any(h.startswith("access-control-") for h in workers.headers)
    head = httpx.head(proxy + "/tasks", auth=GOOD, timeout=30)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0


@pytest.mark.slow
def test_the_tasks_table_search_is_sent_on_as_a_read(proxy: str) -> None:
    search = {
        "draw": "7",
        "start": "0",
        "length": "10",
        "search[value]": "",
        "order[0][column]": "0",
        "order[0][dir]": "desc",
        "columns[0][data]": "name",
    }
    answer = httpx.post(proxy + "/tasks/datatable", data=search, auth=GOOD, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["draw"] == 7


@pytest.mark.slow
def test_health_needs_no_credentials(proxy: str) -> None:
    answer = httpx.get(proxy + "/healthcheck", timeout=10)
    assert (answer.status_code, answer.text) == (200, "OK")


# --- writes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_task_sent_through_the_proxy_never_reaches_flower(
    flower: str, proxy: str, broker: redis.Redis
) -> None:
    send = "/api/task/async-apply/eraser.dispatch_job"
    body = {"args": [A_TASK_ID]}
    before = queued(broker)
    # The same request sent to Flower itself does enqueue a task: what is counted works.
    direct = httpx.post(flower + send, json=body, timeout=30)
    assert direct.status_code == 200, direct.text
    assert queued(broker) == before + 1

    answers = [
        httpx.request(method, proxy + path, json=body, auth=GOOD, timeout=30)
        for path in (send, "/api/task/send-task/eraser.dispatch_job")
        for method in ("POST", "PUT", "PATCH", "DELETE")
    ]
    # Flower enqueues before it answers: nothing more was enqueued.
    assert queued(broker) == before + 1
    for answer in answers:
        assert answer.status_code == 405, answer.request.method
        assert answer.headers["allow"] == "GET, HEAD"
        assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        "/api/task/apply/eraser.dispatch_job",
        "/api/task/async-apply/eraser.dispatch_job",
        "/api/task/send-task/eraser.dispatch_job",
        f"/api/task/abort/{A_TASK_ID}",
        f"/api/task/revoke/{A_TASK_ID}",
        "/api/task/timeout/eraser.erase_service",
        "/api/task/rate-limit/eraser.erase_service",
        "/api/worker/shutdown/celery@w1",
        "/api/worker/pool/restart/celery@w1",
        "/api/worker/pool/grow/celery@w1",
        "/api/worker/pool/shrink/celery@w1",
        "/api/worker/pool/autoscale/celery@w1",
        "/api/worker/queue/add-consumer/celery@w1",
        "/api/worker/queue/cancel-consumer/celery@w1",
    ],
)
def test_control_routes_are_refused_whatever_the_method(proxy: str, path: str) -> None:
    # Flower answers a GET on these with its own 405 (text/plain): a 403 problem
    # document shows the request stopped at the proxy.
    read = httpx.get(proxy + path, auth=GOOD, timeout=10)
    assert read.status_code == 403
    assert read.headers["content-type"] == "application/problem+json"
    write = httpx.post(proxy + path, data={"workername": "celery@w1"}, auth=GOOD, timeout=10)
    assert write.status_code == 405


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        "/api/task/info/../../worker/shutdown/celery@w1",  # dot segments
        "/api/task/info/%2e%2e/%2e%2e/worker/shutdown/celery@w1",  # encoded dot segments
        "/login",  # not a read route
        "/api/unknown",  # a route a later Flower might add
    ],
)
def test_paths_that_are_not_plainly_read_routes_are_refused(proxy: str, path: str) -> None:
    # httpx resolves dot segments itself: http.client sends the path as written.
    url = httpx.URL(proxy)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": BASIC})
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    assert answer.status == 403


# --- configuration (no server) ----------------------------------------------------------


def test_users_hold_hashes_and_the_password_is_checked_in_full() -> None:
    users = parse_users(f" {USERS} ,bob:sha256:{'AB' * 32}")
    assert set(users) == {"alice", "bob"}
    assert authenticated(BASIC, users) == "alice"
    assert authenticated(BASIC.replace("Basic", "Bearer"), users) is None
    assert authenticated("Basic not-base64!", users) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", NoFlowerUsers),  # nobody could get in
        (" , ", NoFlowerUsers),  # only separators
        ("alice:hunter2", BadFlowerUser),  # a plain password is refused
        ("alice:sha256:abc", BadFlowerUser),  # not a whole SHA-256
    ],
)
def test_bad_user_lists_are_refused_without_echoing_a_password(
    text: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        parse_users(text)
    assert "hunter2" not in str(caught.value)


def test_the_command_refuses_to_start_without_users(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("ERASER_FLOWER_USERS", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env either
    assert main(["flower-proxy", "--port", str(_free_port())]) == 2
    assert "ERASER_FLOWER_USERS is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "forwarded"),
    [
        ("/", True),  # the dashboard
        ("/worker/celery@host-1", True),  # a worker's page
        ("/static/css/flower.css", True),  # assets
        ("/api/task/info/x/../../../api/worker/shutdown/w", False),  # dot segments
        ("/api/worker/shutdown/w", False),  # control
        ("/workers/", False),  # Flower has no such route either
    ],
)
def test_read_routes(path: str, forwarded: bool) -> None:
    assert is_read_route(path.encode()) is forwarded
