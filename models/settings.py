"""Typed settings, read once from ``ERASER_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import secret_formats


class ApiKeyEntry(BaseModel):
    """One API key as the service knows it: its id, a name, the SHA-256 of its secret
    and its scopes (``jobs:submit``, ``jobs:read``, ``jobs:admin``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9]{8,32}$")
    name: str = Field(min_length=1, max_length=100)
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    scopes: list[str]
    #: After this moment (UTC when no offset is given) the key is refused with 401.
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def expired(self, now: datetime | None = None) -> bool:
        """True once ``expires_at`` has passed."""
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at


class PublicKeys(BaseModel):
    """A JWKS of public Ed25519 keys (``{"keys": [...]}``), each with its ``kid``."""

    model_config = ConfigDict(frozen=True)

    keys: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _public_ed25519(self) -> PublicKeys:
        secret_formats.parse_public_keys({"keys": self.keys})
        return self


class Settings(BaseSettings):
    """Every setting Eraser reads. Nothing else in the code reads the environment,
    except the target databases' URLs, whose variable names the registry gives."""

    # Inputs stay out of validation errors: several settings are secrets.
    model_config = SettingsConfigDict(
        env_prefix="ERASER_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    #: The job store (jobs, tasks, audit events): PostgreSQL, or SQLite when embedded.
    database_url: str = "sqlite:///eraser.db"
    #: The registry of subject kinds and services (TOML).
    config: Path = Path("services.toml")
    #: Celery broker. The default runs everything inside one process.
    broker_url: str = "memory://localhost/"
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

    # --- resilience (see docs/operations.md and docs/jobs.md) ---------------------------
    #: Transient failures (deadlock, lock timeout, lost connection) retried per task
    #: before it is dead-lettered.
    max_retries: int = Field(default=5, ge=0)
    #: First retry delay; each further retry doubles it, with jitter, up to the maximum.
    retry_backoff_seconds: float = Field(default=1.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=8.0, ge=0)
    #: One execution works at most this long, then continues in a new delivery, so a
    #: message is never held longer than the visibility timeout.
    slice_seconds: float = Field(default=10.0, gt=0)
    #: Broker (and result backend) visibility timeout: an unacknowledged message comes
    #: back after this long. Must exceed the longest slice plus the longest backoff.
    visibility_timeout_seconds: int = Field(default=25, ge=1)
    #: How often workers sweep for unacknowledged messages of dead workers.
    unacked_restore_interval_seconds: int = Field(default=2, ge=1)
    #: A running task whose heartbeat is older than this is taken over (its worker died).
    stale_after_seconds: float = Field(default=15.0, gt=0)
    #: Executions of one task that may die with their worker before it is treated as a
    #: poison message and dead-lettered.
    max_crashes: int = Field(default=3, ge=1)
    #: ``auto``: every batch of a task also writes its running counts into a small
    #: table of the target database (``eraser_ledger``) in the same transaction, so
    #: the counts stay exact through any crash; ``off``: no ledger (a crash mid-batch
    #: then leaves the counts marked inexact). See docs/jobs.md, "Exact counts".
    ledger: Literal["auto", "off"] = "auto"
    #: How long a job may take before the reaper fails what is left of it.
    job_timeout_seconds: int = Field(default=86400, ge=1)
    #: Seconds between two reaper rounds (``eraser beat``).
    reaper_interval_seconds: float = Field(default=5.0, gt=0)
    #: A committed job not dispatched after this long is dispatched by the reaper; a
    #: pending or retrying task whose message is overdue this long is sent again.
    dispatch_grace_seconds: float = Field(default=10.0, gt=0)

    #: ``json``: one JSON object per log line (worker, reaper, API), with job and service.
    log_format: Literal["text", "json"] = "text"
    #: A worker writes the time here every ``liveness_seconds`` (``eraser health worker``
    #: reads it: a liveness probe without a broker round trip).
    liveness_file: Path | None = None
    liveness_seconds: float = Field(default=10.0, gt=0)

    # --- the way in (HTTP API, certificates, events) --------------------------------------
    #: API keys, as ``eraser keys create`` prints them: a JSON list of
    #: ``{"id", "name", "hash", "scopes"}``. Only hashes: never a secret.
    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    #: Signs erasure certificates (Ed25519, a compact JWS): a private key as a JWK
    #: (JSON) or PEM; ``eraser certificate keygen`` makes one. Required in a deployment.
    certificate_signing_key: SecretStr | None = None
    #: Public keys of retired signing keys, a JWKS (``{"keys": [...]}``): served at
    #: ``/.well-known/jwks.json`` beside the current key, so older certificates verify.
    certificate_public_keys: PublicKeys = Field(default_factory=PublicKeys)
    #: Keys the subject's hash (HMAC-SHA256 of ``kind:value``) wherever Eraser needs to
    #: recognise a subject without keeping it. Required in a deployment.
    subject_hash_pepper: SecretStr | None = None
    #: Encrypts the subject's value in the job store (a Fernet key). Required in a
    #: deployment.
    job_store_encryption_key: SecretStr | None = None
    #: Earlier job-store encryption keys, comma-separated, newest first: values sealed
    #: under them are still read, and ``python -m tasks.resealing`` seals them again
    #: under the current key. See docs/privacy.md, "Key rotation".
    job_store_retired_encryption_keys: SecretStr | None = None
    #: Days a failed (or partially failed) job keeps the subject's value, so that it
    #: can be retried; then the reaper purges it. Succeeded and cancelled jobs drop it
    #: at once.
    subject_retention_days: float = Field(default=30.0, ge=0)
    #: Where to POST a completion event (optional), signed with ``webhook_secret``.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    #: Publish completion events to the ``eraser.events`` queue.
    events: bool = True
    #: Largest request body the API accepts, in bytes.
    api_max_body_bytes: int = Field(default=65536, ge=1024)

    # --- API keys and rate limits (see docs/http-api.md) ----------------------------------
    #: A JSON file of key entries (as ``ERASER_API_KEYS``), accepted beside them and
    #: re-read within a second of a change: ``eraser keys revoke`` takes effect without
    #: a restart. Unreadable or invalid while the API runs: every key is refused (503).
    api_keys_file: Path | None = None
    #: Where the rate limits count: ``redis://...`` (shared by every API replica) or
    #: ``memory://`` (each process counts alone). Default: the broker's Redis when the
    #: broker is Redis, else ``memory://``.
    rate_limit_storage: str | None = None
    #: Submissions (``POST /v1/jobs``, dry runs included) per API key, as ``count/period``
    #: (``120/minute``, ``5/second``, ``1000/hour``); empty turns the limit off.
    rate_limit_submits: str = "120/minute"
    #: Expensive calls per API key: dry runs and ``GET /v1/services?plans=true`` (each
    #: reflects every database it names).
    rate_limit_expensive: str = "20/minute"
    #: Failed authentications (no key, an unknown or an expired one) per client address;
    #: past it the address gets 429 instead of 401 (a valid key still works).
    rate_limit_bad_keys: str = "30/minute"

    @field_validator("rate_limit_submits", "rate_limit_expensive", "rate_limit_bad_keys")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value.strip():
            from limits import parse  # noqa: PLC0415 - only the API needs the library

            if parse(value).amount < 1:  # a ValueError names what it cannot read
                raise ValueError("a rate limit allows at least 1 call (empty: no limit)")
        return value.strip()

    @field_validator("certificate_signing_key")
    @classmethod
    def _signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_formats.parse_signing_key(value.get_secret_value())
        return value

    @field_validator("subject_hash_pepper")
    @classmethod
    def _pepper(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_formats.parse_pepper(value.get_secret_value())
        return value

    @field_validator("job_store_encryption_key")
    @classmethod
    def _encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret_formats.parse_encryption_key(value.get_secret_value())
        return value

    @field_validator("job_store_retired_encryption_keys")
    @classmethod
    def _retired_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in retired_keys(value):
                secret_formats.parse_encryption_key(key)
        return value

    @property
    def embedded(self) -> bool:
        """True when the broker lives in this process (``memory://``): the embedded
        default, where missing secrets are derived (and marked ``dev``)."""
        return self.broker_url.startswith("memory://")

    @model_validator(mode="after")
    def _message_outlives_work(self) -> Settings:
        longest = self.slice_seconds + self.retry_backoff_max_seconds
        if self.visibility_timeout_seconds <= longest:
            raise ValueError(
                f"visibility_timeout_seconds ({self.visibility_timeout_seconds}) must exceed "
                f"slice_seconds + retry_backoff_max_seconds ({longest:g}): a message held "
                "longer than the visibility timeout is delivered a second time"
            )
        if self.stale_after_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds must be more than twice heartbeat_seconds")
        return self


def retired_keys(value: SecretStr | None) -> list[str]:
    """The retired job-store keys of the comma-separated setting, in order."""
    if value is None:
        return []
    return [k.strip() for k in value.get_secret_value().split(",") if k.strip()]


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
