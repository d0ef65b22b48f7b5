"""Typed settings, read once from ``ERASER_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Eraser reads. Nothing else in the code reads the environment,
    except the target databases' URLs, whose variable names the registry gives."""

    model_config = SettingsConfigDict(env_prefix="ERASER_", env_file=".env", extra="ignore")

    #: The job store (jobs, tasks, audit events): PostgreSQL, or SQLite when embedded.
    database_url: str = "sqlite:///eraser.db"
    #: The registry of subject kinds and services (TOML).
    config: Path = Path("services.toml")
    #: Celery broker. The default runs everything inside one process.
    broker_url: str = "memory://"
    #: Celery result backend (chord counters only; the job store is the source of truth).
    result_backend: str = "cache+memory://"
    #: The queue that erase and finalize tasks go to unless a service has its own.
    default_queue: str = "eraser"
    #: Rows per transaction when erasing (a service's registry entry may override it).
    batch_size: int = Field(default=2000, ge=1)
    #: How long one batch waits for a row lock, in milliseconds.
    lock_timeout_ms: int = Field(default=5000, ge=1)
    #: Workers publish task events (Flower's live view).
    task_events: bool = True
    #: Seconds between heartbeat writes of a running task (progress is kept as often).
    heartbeat_seconds: float = Field(default=1.0, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (created once)."""
    return Settings()


class MissingDatabaseUrl(Exception):
    """A service's URL variable is not set in this process's environment."""

    def __init__(self, variable: str) -> None:
        super().__init__(f"environment variable {variable} (the service's database URL) is not set")
        self.variable = variable


def service_url(variable: str) -> str:
    """A target database's URL, from the environment variable the registry names."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise MissingDatabaseUrl(variable)
    return value
