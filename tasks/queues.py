"""Queue names, in one place. A service may have its own queue (registry ``queue``) so
its tasks run on workers next to its database."""

from __future__ import annotations

from enum import StrEnum

from models.registry import Registry


class Queue(StrEnum):
    #: erase_service and finalize_job, unless a service names its own queue.
    DEFAULT = "eraser"
    #: Dead letters: a copy of each task that failed for good. No worker consumes it;
    #: operators inspect and replay (``eraser dead-letters``).
    DEAD_LETTER = "eraser.dead_letter"
    #: Erasure requests sent as plain Celery messages (``eraser.submit_request``).
    REQUESTS = "eraser.requests"


def queue_for(registry: Registry, service: str, default: str) -> str:
    """The queue ``service``'s erase tasks go to."""
    return registry.services[service].queue or default


def all_queues(registry: Registry, default: str) -> list[str]:
    """Every queue a worker serving the whole registry should consume."""
    services = {s.queue for s in registry.services.values() if s.queue}
    return sorted({default, Queue.REQUESTS.value, *services})
