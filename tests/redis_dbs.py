"""Redis databases for test deployments, claimed so two runs on one Redis never share one.

A run takes its server from ``ERASER_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379``) and the database numbers it may use from
``ERASER_TEST_REDIS_DBS`` (numbers and ranges, e.g. ``3-12`` or ``3,4,7-9``; default
``3-12``, the numbers the suite always used; ``make up`` keeps 1-2 and the benchmarks
13-14).

Before a deployment touches a database it claims it: ``SET eraser-test:claim <run id>
NX EX <ttl>`` in that database. A number another live run holds is skipped for the next
one in the list. A thread renews the claims every second while the process lives; a run
that dies loses its claims after ``CLAIM_TTL_SECONDS``. Flushing and releasing check the
claim inside one Lua script, so a run empties only databases it holds at that moment,
and a flush keeps the claim (the key is written back in the same script).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import pytest
import redis

REDIS_URL = os.environ.get("ERASER_TEST_REDIS_URL", "redis://127.0.0.1:6379")
DEFAULT_DBS = "3-12"
CLAIM_KEY = "eraser-test:claim"
CLAIM_TTL_SECONDS = 30
RENEW_SECONDS = 1.0
REQUIRE = os.environ.get("ERASER_REQUIRE_SERVICES") == "1"

# KEYS[1] the claim key; ARGV[1] this run's id; ARGV[2] the ttl.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  -- emptied by a FLUSHDB of its user (deploy/up.py flushes its databases): take it back
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
end
return 0
"""
_FLUSH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
return 1
"""


class NoFreeRedisDb(RuntimeError):
    """Every database of the list is held by another run."""


class LostRedisDb(RuntimeError):
    """A claim this run held now names another run: the databases were shared."""


def parse_numbers(spec: str) -> list[int]:
    """``"3-5,9"`` -> ``[3, 4, 5, 9]`` (order kept, duplicates dropped)."""
    numbers: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        for number in range(int(low), int(high or low) + 1):
            if number not in numbers:
                numbers.append(number)
    if not numbers:
        raise ValueError(f"no Redis database numbers in {spec!r}")
    return numbers


def redis_up(url: str = REDIS_URL) -> bool:
    """Whether the test Redis answers."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def need_redis() -> None:
    """Skip (or, when services are required, fail) if the test Redis does not answer."""
    if redis_up():
        return
    if REQUIRE:
        pytest.fail("Redis is not reachable and ERASER_REQUIRE_SERVICES=1")
    pytest.skip("Redis is not reachable")


class RedisDbPool:
    """The databases this process may claim on one Redis server, and those it holds."""

    def __init__(
        self,
        url: str = REDIS_URL,
        numbers: Sequence[int] | None = None,
        *,
        run_id: str | None = None,
        ttl: int = CLAIM_TTL_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        self.numbers = list(
            numbers or parse_numbers(os.environ.get("ERASER_TEST_REDIS_DBS", "") or DEFAULT_DBS)
        )
        self.run_id = run_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.ttl = ttl
        self.held: set[int] = set()
        self.lost: set[int] = set()
        self._clients: dict[int, redis.Redis] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._renewer: threading.Thread | None = None

    def url_of(self, number: int) -> str:
        """The URL of database ``number`` on this pool's server."""
        return f"{self.url}/{number}"

    def _client(self, number: int) -> redis.Redis:
        if number not in self._clients:
            self._clients[number] = redis.Redis.from_url(self.url_of(number))
        return self._clients[number]

    def _try(self, number: int) -> bool:
        try:
            taken = self._client(number).set(CLAIM_KEY, self.run_id, nx=True, ex=self.ttl)
        except redis.ResponseError:  # a number beyond the server's ``databases``
            return False
        if not taken:
            return False
        self._client(number).eval(_FLUSH, 1, CLAIM_KEY, self.run_id, self.ttl)  # leftovers
        with self._lock:
            self.held.add(number)
        return True

    def claim(self, count: int = 1, *, contiguous: bool = False) -> list[int]:
        """Claim ``count`` free databases of the list (consecutive numbers if
        ``contiguous``), emptied; ``NoFreeRedisDb`` if the list has not enough."""
        got: list[int] = []
        for start, number in enumerate(self.numbers):
            if len(got) == count:
                break
            if contiguous:
                wanted = list(range(number, number + count))
                if not set(wanted) <= set(self.numbers[start:]):
                    continue
                got = self._claim_all(wanted)
            elif number not in self.held and self._try(number):
                got.append(number)
        if len(got) < count:
            self.release(got)
            raise NoFreeRedisDb(
                f"{count} Redis database(s) wanted, none left of {self.numbers} on {self.url}"
                " (set ERASER_TEST_REDIS_DBS to other numbers)"
            )
        self._start_renewing()
        return got

    def _claim_all(self, wanted: list[int]) -> list[int]:
        got: list[int] = []
        for number in wanted:
            if number in self.held or not self._try(number):
                self.release(got)
                return []
            got.append(number)
        return got

    def flush(self, number: int) -> None:
        """Empty a held database (its claim stays); ``LostRedisDb`` if not held."""
        if not self._client(number).eval(_FLUSH, 1, CLAIM_KEY, self.run_id, self.ttl):
            raise LostRedisDb(f"Redis database {number} is not held by this run")

    def release(self, numbers: Iterable[int]) -> None:
        """Empty and give back databases; one no longer held is left untouched."""
        for number in list(numbers):
            with self._lock:
                self.held.discard(number)
            self._client(number).eval(_RELEASE, 1, CLAIM_KEY, self.run_id)

    def renew(self) -> None:
        """Extend every claim (retaking one its user flushed); a claim now held by
        another run moves to ``lost``."""
        with self._lock:
            numbers = sorted(self.held)
        for number in numbers:
            if not self._client(number).eval(_RENEW, 1, CLAIM_KEY, self.run_id, self.ttl):
                with self._lock:
                    self.held.discard(number)
                    self.lost.add(number)

    def check(self) -> None:
        """``LostRedisDb`` if any claim of this run was taken by another."""
        if self.lost:
            raise LostRedisDb(f"Redis databases {sorted(self.lost)} were claimed by another run")

    def _start_renewing(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stopping.wait(RENEW_SECONDS):
            try:
                self.renew()
            except redis.RedisError:
                continue  # Redis restarting: the next round tries again

    def close(self) -> None:
        """Release every held database and stop renewing."""
        self._stopping.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        with contextlib.suppress(redis.RedisError):  # else the claims expire by themselves
            self.release(sorted(self.held))
        for client in self._clients.values():
            client.close()


_pool: RedisDbPool | None = None


def pool() -> RedisDbPool:
    """This process's pool (created on first use, released at exit)."""
    global _pool  # noqa: PLW0603 - one pool per process, shared by every deployment
    if _pool is None:
        _pool = RedisDbPool()
        atexit.register(_pool.close)
    return _pool


def finish() -> None:
    """Release this process's databases (end of a test session); ``LostRedisDb`` if
    another run took one of them meanwhile."""
    global _pool  # noqa: PLW0603 - see pool()
    if _pool is None:
        return
    try:
        _pool.check()
    finally:
        _pool.close()
        _pool = None


@contextmanager
def claimed(count: int, *, contiguous: bool = False) -> Iterator[list[int]]:
    """``count`` databases held (and empty) for the ``with`` block, emptied and given
    back after; fails the block's owner if another run took one meanwhile."""
    numbers = pool().claim(count, contiguous=contiguous)
    try:
        yield numbers
    finally:
        pool().release(numbers)
    lost = pool().lost.intersection(numbers)
    if lost:
        raise LostRedisDb(f"Redis databases {sorted(lost)} were claimed by another run")
