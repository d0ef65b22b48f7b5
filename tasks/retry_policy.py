"""When an execution runs again: exponential backoff with full jitter after a fault,
a short pause when another execution holds the task or the subject's lock."""

from __future__ import annotations

import random

#: How long an execution waits for another erasure's per-subject lock before it gives
#: the worker back and tries again later (a busy retry, not counted as a failure).
SUBJECT_LOCK_WAIT_SECONDS = 2.0


def backoff(retry: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: a random delay in [base/2, min(cap,
    base * 2**(retry-1))], so retries of many tasks spread out."""
    ceiling = min(cap, base * 2 ** max(retry - 1, 0))
    return random.uniform(min(base / 2, ceiling), ceiling)  # noqa: S311 - not security


def busy_delay(base: float, cap: float) -> float:
    """The pause after the subject's lock was busy (twice the first retry's)."""
    return backoff(1, base * 2, cap)


def wait_for_lease(held_for: float, stale_after: float) -> float:
    """How long to wait when another execution holds the task and its heartbeat is
    ``held_for`` seconds old: until its lease would be stale, jittered, at most a
    full stale period."""
    wait = stale_after - held_for + random.uniform(0.5, 2.0)  # noqa: S311 - not security
    return min(wait, stale_after)
