"""What a worker process holds on to: settings, the registry, the job store and one
engine per target service. Created on first use; engines are dropped after a fork
(a pooled connection must never be shared between processes)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import sqlalchemy as sa
from celery.signals import worker_process_init

from models.registry import Registry, load_registry
from models.settings import Settings, get_settings, service_url
from models.store.database import JobStore
from worker.database import create_engine
from worker.service import PlanCache


@dataclass
class Resources:
    settings: Settings
    registry: Registry
    store: JobStore
    plans: PlanCache = field(default_factory=PlanCache)
    _engines: dict[str, sa.Engine] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def engine_for(self, service: str) -> sa.Engine:
        """The target engine of ``service`` (its URL read from the variable the registry
        names, at first use)."""
        with self._lock:
            if service not in self._engines:
                url = service_url(self.registry.services[service].url_env)
                # No ping at checkout (a round trip per use): a connection the server
                # dropped fails its task with a transient error, which is retried,
                # and the pool is renewed.
                self._engines[service] = create_engine(
                    url, existing=True, pool_size=2, max_overflow=2, pool_pre_ping=False
                )
            return self._engines[service]

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose(close=False)
            self._engines.clear()
            self.store.engine.dispose(close=False)


_current: Resources | None = None
_guard = threading.Lock()


def resources() -> Resources:
    """This process's resources, created on first use from the settings."""
    global _current  # noqa: PLW0603 - one set of resources per process, by design
    with _guard:
        if _current is None:
            settings = get_settings()
            _current = Resources(
                settings=settings,
                registry=load_registry(settings.config),
                store=JobStore(create_engine(settings.database_url, pool_pre_ping=False)),
            )
        return _current


def use_resources(chosen: Resources) -> None:
    """Make ``chosen`` this process's resources (the demo builds its own)."""
    global _current  # noqa: PLW0603 - see resources()
    with _guard:
        if _current is not None and _current is not chosen:
            _current.dispose()
        _current = chosen


def reset_resources() -> None:
    """Forget the current resources (after a fork, or when settings change in tests)."""
    global _current  # noqa: PLW0603 - see resources()
    with _guard:
        if _current is not None:
            _current.dispose()
        _current = None


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    reset_resources()
