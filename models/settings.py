"""Typed settings, read once from ``ERASER_*`` environment variables (and ``.env``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Eraser reads. Nothing else in the code reads the environment."""

    model_config = SettingsConfigDict(env_prefix="ERASER_", env_file=".env", extra="ignore")

    #: Celery broker. The default runs everything inside one process.
    broker_url: str = "memory://"
    #: Celery result backend (chord counters only; the job store is the source of truth).
    result_backend: str = "cache+memory://"
    #: Rows per transaction when erasing.
    batch_size: int = 2000
    #: How long one batch waits for a row lock, in milliseconds.
    lock_timeout_ms: int = 5000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (created once)."""
    return Settings()
