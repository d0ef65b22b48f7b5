"""Redis (and Valkey): the subject's keys are those matching the service's glob patterns.

Keys are found with ``SCAN MATCH <pattern> COUNT <scan_count>`` (never ``KEYS``, which
blocks the server) and removed with ``UNLINK`` (the memory is freed off the main thread)
in batches of ``batch_size``. The subject's value is escaped for glob, so ``a*`` matches
the key ``a*`` only, never ``ab``.

Counts stay exact across a failed attempt and its retry: each batch's ``UNLINK`` and
the count of what it removed are one Lua call, so the server applies both or neither;
the count lives in a hash ``eraser:erasure:<erasure_id>`` (per pattern template, no subject
data) that expires after a week. A retry with the same erasure_id adds to it, so the
report counts every key removed by any attempt once.

A Redis Cluster (``cluster = true``) is scanned node by node (every primary) and its
batches are split by hash slot; the Lua call cannot span slots there, so the count is
added after each ``UNLINK`` answers (a reply lost in a failover can leave up to one
batch uncounted; the verification still proves nothing is left).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions
from redis.cluster import RedisCluster

from models.erasure import ErasureReport
from models.registry import RedisService
from worker.execution.options import ProgressCallback
from worker.stores.base import MAX_PASSES, Store, Tally, announce
from worker.stores.exceptions import StoreRefused, StoreUnavailable

#: Where the counts of one erasure live in the service's Redis.
LEDGER_PREFIX = "eraser:erasure:"
#: A ledger outlives any retry of its erasure.
LEDGER_SECONDS = 7 * 24 * 3600
_LEDGER = LEDGER_PREFIX.encode()

#: KEYS[1] is the ledger, KEYS[2..] the batch; ARGV: the template, the ledger's expiry.
#: Removing and counting in one call: a reply lost after the server ran it leaves a
#: correct count behind.
_UNLINK_COUNTED = """
local n = redis.call('UNLINK', unpack(KEYS, 2))
redis.call('HINCRBY', KEYS[1], ARGV[1], n)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
"""

_GLOB_ESCAPES = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def glob_escape(value: str) -> str:
    """``value`` as a glob that matches exactly ``value`` (``*``, ``?``, ``[``, ``]``
    and ``\\`` lose their meaning)."""
    return value.translate(_GLOB_ESCAPES)


class RedisStore(Store):
    """The keys of one subject in one Redis service."""

    kind = "redis"

    def __init__(self, name: str, service: RedisService, url: str) -> None:
        super().__init__(name, service.keys, {"cluster": service.cluster})
        self.service = service
        self.client: Any = (
            RedisCluster.from_url(url, socket_timeout=30)
            if service.cluster
            else redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10)
        )
        self._unlink_counted = self.client.register_script(_UNLINK_COUNTED)

    def escape(self, subject: str) -> str:
        return glob_escape(subject)

    def close(self) -> None:
        self.client.close()

    def preview(self, subject: str) -> ErasureReport:
        started = time.monotonic()
        with self._faults("SCAN"):
            tallies, _ = self._census(subject)
        # ``verified``: nothing of the subject is there (true only when nothing matched).
        total = sum(t.rows for t in tallies.values())
        return self.report(dry_run=True, tallies=tallies, remaining=total, started=started)

    def verify(self, subject: str) -> int:
        with self._faults("SCAN"):
            return len(self._census(subject)[1])

    def erase(
        self,
        subject: str,
        progress: ProgressCallback | None = None,
        *,
        erasure_id: str | None = None,
    ) -> ErasureReport:
        started = time.monotonic()
        patterns = self.render(subject)
        ledger = LEDGER_PREFIX + (erasure_id or uuid.uuid4().hex)
        passes = 0
        with self._faults("UNLINK"):
            totals = self._counted(ledger)
            while True:
                passes += 1
                for template, pattern in patterns:
                    for batch in self._batches(pattern):
                        removed = self._unlink(ledger, template, batch)
                        totals[template] = totals.get(template, 0) + removed
                        announce(progress, template, removed, totals, started)
                remaining = len(self._census(subject)[1])
                if remaining == 0 or passes >= MAX_PASSES:
                    break
            totals = self._counted(ledger)
            if erasure_id is None:
                self.client.unlink(ledger)
        tallies = {t: Tally(rows=totals.get(t, 0)) for t in self.templates}
        return self.report(
            dry_run=False, tallies=tallies, remaining=remaining, started=started, passes=passes
        )

    # --- the commands ----------------------------------------------------------------------

    def _scan(self, pattern: str) -> Iterator[bytes]:
        # RedisCluster.scan_iter walks every primary node in turn.
        yield from self.client.scan_iter(match=pattern, count=self.service.scan_count)

    def _batches(self, pattern: str) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        for key in self._scan(pattern):
            if key.startswith(_LEDGER):  # never another erasure's counts
                continue
            batch.append(key)
            if len(batch) >= self.service.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _unlink(self, ledger: str, template: str, batch: list[bytes]) -> int:
        if not self.service.cluster:
            return int(self._unlink_counted(keys=[ledger, *batch], args=[template, LEDGER_SECONDS]))
        removed = int(self.client.unlink(*batch))  # split by slot by the cluster client
        self.client.hincrby(ledger, template, removed)
        self.client.expire(ledger, LEDGER_SECONDS)
        return removed

    def _counted(self, ledger: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.client.hgetall(ledger)
        return {k.decode(): int(v) for k, v in raw.items()}

    def _census(self, subject: str) -> tuple[dict[str, Tally], set[bytes]]:
        """Keys matching each template now; a key two patterns match counts for the first."""
        seen: set[bytes] = set()
        tallies: dict[str, Tally] = {}
        for template, pattern in self.render(subject):
            tally = tallies.setdefault(template, Tally())
            for key in self._scan(pattern):
                if key not in seen and not key.startswith(_LEDGER):
                    seen.add(key)
                    tally.rows += 1
        return tallies, seen

    @contextmanager
    def _faults(self, operation: str) -> Iterator[None]:
        """Redis errors as ``StoreUnavailable`` (retry) or ``StoreRefused`` (do not);
        only the error's class or code word is kept, never its text."""
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise StoreRefused(self.name, self.kind, operation, type(exc).__name__) from None
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.TryAgainError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.MasterDownError,
            OSError,
        ) as exc:
            raise StoreUnavailable(self.name, self.kind, type(exc).__name__) from None
        except redis.exceptions.ResponseError as exc:
            code = (str(exc).split() or ["ERR"])[0]
            if code in {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"}:
                raise StoreUnavailable(self.name, self.kind, code) from None
            raise StoreRefused(self.name, self.kind, operation, code) from None
