"""Rate limits of the HTTP API: submissions and expensive calls per API key, failed
authentications per client address. Past a limit the API answers 429 with
``Retry-After`` (a problem document).

The counts live where ``ERASER_RATE_LIMIT_STORAGE`` says: in Redis by default when the
broker is Redis, so several API replicas share one budget per key (each replica
counting alone would multiply it by the number of replicas); ``memory://`` counts in
the process. The ``limits`` library keeps a sliding window counter (two counters per
key and window, updated atomically by Redis). When the storage cannot be reached the
call is let through and a warning logged: an outage of the counter's Redis does not
stop erasures.
"""

from __future__ import annotations

import logging
import math
import time
from enum import StrEnum

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from api.problems import Problem
from models.settings import Settings

log = logging.getLogger("eraser.api")

#: Every key of the API's counters starts with this.
KEY_PREFIX = "eraser:rate-limit"
#: A counter's Redis answers within this many seconds, or the call goes through.
STORAGE_TIMEOUT_SECONDS = 0.5


class Limit(StrEnum):
    """What is counted, and per what."""

    #: ``POST /v1/jobs`` per API key (dry runs included).
    SUBMITS = "submits"
    #: Dry runs and ``GET /v1/services?plans=true`` per API key.
    EXPENSIVE = "expensive"
    #: Failed authentications per client address.
    BAD_KEYS = "bad-keys"


def storage_url(settings: Settings) -> str:
    """``ERASER_RATE_LIMIT_STORAGE``, or the broker's Redis, or ``memory://``."""
    if settings.rate_limit_storage:
        return settings.rate_limit_storage
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


class RateLimits:
    """The API's limits over one storage; a limit set to ``""`` is off."""

    def __init__(self, settings: Settings) -> None:
        url = storage_url(settings)
        options: dict[str, float | str | bool] = {}
        if url.startswith(("redis://", "rediss://")):
            options = {
                "socket_timeout": STORAGE_TIMEOUT_SECONDS,
                "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
            }
        storage = storage_from_string(url, key_prefix=KEY_PREFIX, **options)
        if not isinstance(storage, Storage):
            raise ValueError(f"ERASER_RATE_LIMIT_STORAGE: {url.split(':')[0]} is asynchronous")
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)
        configured = {
            Limit.SUBMITS: settings.rate_limit_submits,
            Limit.EXPENSIVE: settings.rate_limit_expensive,
            Limit.BAD_KEYS: settings.rate_limit_bad_keys,
        }
        self._items: dict[Limit, RateLimitItem] = {
            limit: parse(text) for limit, text in configured.items() if text
        }

    def hit(self, limit: Limit, who: str) -> None:
        """Count one call of ``who`` (a key id, a client address); ``Problem`` 429 with
        ``Retry-After`` when it is over the limit (the refused call is not counted)."""
        item = self._items.get(limit)
        if item is None:
            return
        try:
            if self._limiter.hit(item, limit.value, who):
                return
            reset = self._limiter.get_window_stats(item, limit.value, who).reset_time
        except Exception as exc:  # the storage is down: let the call through
            log.warning("rate limit %s not counted: %s", limit.value, type(exc).__name__)
            return
        retry_after = max(1, math.ceil(reset - time.time()))
        raise Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"at most {item.amount} per {_period(item)} ({limit.value}); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def _period(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
