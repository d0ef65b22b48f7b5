"""Redis databases are claimed, so runs on one Redis never share or flush each other's;
the broker monitor survives an idle Redis and reports a dead connection."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import BrokerMonitor
from tests.redis_dbs import (
    CLAIM_KEY,
    LostRedisDb,
    NoFreeRedisDb,
    RedisDbPool,
    claimed,
    need_redis,
    parse_numbers,
    pool,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def numbers() -> list[int]:
    """The database numbers this run may use (``ERASER_TEST_REDIS_DBS``)."""
    need_redis()
    return pool().numbers


@pytest.fixture
def pools() -> Iterator[list[RedisDbPool]]:
    made: list[RedisDbPool] = []
    yield made
    for each in made:
        each.close()


def test_database_lists_accept_numbers_and_ranges() -> None:
    assert parse_numbers("3-5, 9,4") == [3, 4, 5, 9]
    with pytest.raises(ValueError, match="no Redis database numbers"):
        parse_numbers(" , ")


def test_two_runs_claiming_at_once_get_different_databases(
    numbers: list[int], pools: list[RedisDbPool]
) -> None:
    runs = [RedisDbPool(numbers=numbers, run_id=f"run-{i}") for i in range(2)]
    pools.extend(runs)
    start = threading.Barrier(len(runs))
    got: dict[str, list[int]] = {}

    def claim(run: RedisDbPool) -> None:
        start.wait()
        got[run.run_id] = run.claim(2)

    threads = [threading.Thread(target=claim, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    first, second = got["run-0"], got["run-1"]
    assert len(first) == len(second) == 2
    assert not set(first) & set(second)
    for run, held in ((runs[0], first), (runs[1], second)):
        for number in held:
            holder = redis.Redis.from_url(run.url_of(number)).get(CLAIM_KEY)
            assert holder == run.run_id.encode()


def test_a_run_never_flushes_or_releases_a_database_it_does_not_hold(
    numbers: list[int], pools: list[RedisDbPool]
) -> None:
    owner, intruder = RedisDbPool(numbers=numbers), RedisDbPool(numbers=numbers)
    pools.extend([owner, intruder])
    (number,) = owner.claim(1)
    data = redis.Redis.from_url(owner.url_of(number))
    data.set("eraser-test:payload", "kept")
    with pytest.raises(LostRedisDb):
        intruder.flush(number)
    intruder.release([number])
    assert data.get("eraser-test:payload") == b"kept"
    owner.flush(number)  # the holder may: data gone, claim kept
    assert data.get("eraser-test:payload") is None
    assert data.get(CLAIM_KEY) == owner.run_id.encode()
    # Skipped by the next claim, while held.
    assert number not in intruder.claim(1)


def test_a_short_list_held_by_another_run_is_refused(
    numbers: list[int], pools: list[RedisDbPool]
) -> None:
    owner = RedisDbPool(numbers=numbers)
    pools.append(owner)
    (number,) = owner.claim(1)
    other = RedisDbPool(numbers=[number])
    pools.append(other)
    with pytest.raises(NoFreeRedisDb, match="ERASER_TEST_REDIS_DBS"):
        other.claim(1)


def test_the_claim_of_a_dead_run_expires(numbers: list[int], pools: list[RedisDbPool]) -> None:
    dead = RedisDbPool(numbers=numbers, ttl=1)
    pools.append(dead)
    (number,) = dead.claim(1)
    dead._stopping.set()  # the run stops renewing, as if killed
    heir = RedisDbPool(numbers=[number])
    pools.append(heir)
    time.sleep(1.5)
    assert heir.claim(1) == [number]
    dead.renew()
    assert dead.lost == {number}
    with pytest.raises(LostRedisDb):
        dead.check()


def test_a_flushed_claim_is_taken_back(numbers: list[int], pools: list[RedisDbPool]) -> None:
    # ``make up`` (deploy/up.py) flushes the databases it is given, claim included.
    run = RedisDbPool(numbers=numbers)
    pools.append(run)
    (number,) = run.claim(1)
    redis.Redis.from_url(run.url_of(number)).flushdb()
    run.renew()
    assert redis.Redis.from_url(run.url_of(number)).get(CLAIM_KEY) == run.run_id.encode()
    assert not run.lost


_HOLDER = """
import sys
from tests.redis_dbs import pool
numbers = pool().claim(2)
import redis
for number in numbers:
    redis.Redis.from_url(pool().url_of(number)).set("eraser-test:payload", "other run")
print(",".join(map(str, numbers)), flush=True)
sys.stdin.readline()
"""


def test_another_process_on_the_same_redis_keeps_its_databases(numbers: list[int]) -> None:
    """A second test process beside this one: neither takes nor empties the other's."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        theirs = [int(n) for n in holder.stdout.readline().split(",")]
        with claimed(2) as ours:
            assert not set(ours) & set(theirs)
            for number in ours:
                pool().flush(number)
        for number in theirs:
            data = redis.Redis.from_url(pool().url_of(number))
            assert data.get("eraser-test:payload") == b"other run"
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    for number in theirs:  # released at its exit: emptied, claim gone
        assert redis.Redis.from_url(pool().url_of(number)).get("eraser-test:payload") is None


@pytest.mark.slow
def test_the_broker_monitor_survives_an_idle_redis(numbers: list[int]) -> None:
    with claimed(1) as (number,):
        monitor = BrokerMonitor(pool().url_of(number))
        monitor.start_and_wait()
        try:
            time.sleep(6)  # longer than redis-py's default socket timeout (5 s)
            redis.Redis.from_url(pool().url_of(number)).set("eraser-test:after-idle", "1")
            deadline = time.monotonic() + 10
            while not any("after-idle" in c for c in monitor.commands()):
                assert time.monotonic() < deadline, monitor.commands()[-5:]
                time.sleep(0.1)
        finally:
            monitor.stop()
        assert monitor.error is None


def _closing_server(listener: socket.socket) -> None:
    """Answers +OK to every command until MONITOR, then hangs up (a Redis going away)."""
    conn, _ = listener.accept()
    with conn:
        seen = b""
        while b"MONITOR" not in seen.upper():
            chunk = conn.recv(4096)
            if not chunk:
                return
            seen += chunk
            conn.sendall(b"+OK\r\n" * chunk.count(b"*"))


def test_a_dead_monitor_connection_fails_the_reader() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        server = threading.Thread(target=_closing_server, args=(listener,), daemon=True)
        server.start()
        monitor = BrokerMonitor(f"redis://127.0.0.1:{port}/0")
        monitor.start()
        monitor.join(timeout=10)
        server.join(timeout=10)
    assert not monitor.is_alive()
    assert monitor.error is not None
    with pytest.raises(RuntimeError, match="broker monitor failed"):
        monitor.commands()
