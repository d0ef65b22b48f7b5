"""The service registry: which subject kinds exist and which databases hold them.

A TOML file (``services.toml``)::

    [subjects.tenant]
    column = "tenant_id"                 # or columns = ["tenant_id", "tenants.id"]

    [services.orders]
    url_env = "ORDERS_DATABASE_URL"      # the DSN comes from the environment, never the file
    schemas = ["public", "billing"]
    batch_size = 5000
    [services.orders.tables.customers]
    action = "anonymize"
    set = { email = "null", name = "'erased'" }

An invalid file raises ``RegistryError`` naming the file, the place and the field.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.erasure import ScalarValue, TableAction, TablePolicy

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RegistryError(Exception):
    """The registry file cannot be used; the message names the file, place and field."""


class SubjectKind(BaseModel):
    """A kind of subject (``tenant``, ``user``): the column(s) that hold its value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    columns: list[str] = Field(default_factory=list)
    #: Non-dry-run jobs of this kind need the admin scope (used by the HTTP API).
    admin_only: bool = False
    #: Completion events may carry the subject's value (off: they carry only ids).
    events_include_value: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> SubjectKind:
        if bool(self.column) == bool(self.columns):
            raise ValueError("give exactly one of 'column' or 'columns'")
        return self

    @property
    def subject_columns(self) -> list[str]:
        return [self.column] if self.column else list(self.columns)


class VirtualForeignKey(BaseModel):
    """A reference the database does not declare: ``child`` columns point at ``parent``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``table.column`` or ``schema.table.column`` (a list for composite keys).
    child: list[str]
    parent: list[str]

    @field_validator("child", "parent", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _shape(self) -> VirtualForeignKey:
        if len(self.child) != len(self.parent) or not self.child:
            raise ValueError("child and parent need the same number of columns")
        for ref in (*self.child, *self.parent):
            if ref.count(".") not in (1, 2):
                raise ValueError(f"{ref!r} is not table.column or schema.table.column")
        return self


class TableSettings(BaseModel):
    """A table policy as written in the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: TableAction = TableAction.DELETE
    set: dict[str, ScalarValue] = Field(default_factory=dict)

    @field_validator("action")
    @classmethod
    def _not_internal(cls, value: TableAction) -> TableAction:
        if value is TableAction.NULLIFY:
            raise ValueError("'nullify' is done by the engine, it is not a policy")
        return value

    @field_validator("set", mode="before")
    @classmethod
    def _sql_literals(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: _literal(v) for k, v in value.items()}

    def policy(self) -> TablePolicy:
        return TablePolicy(action=self.action, set=dict(self.set))


def _literal(value: Any) -> Any:
    """``"null"`` is NULL and ``"'text'"`` is a string, as in SQL; TOML numbers and
    booleans stay as they are; any other string is taken as written."""
    if isinstance(value, str):
        if value.strip().lower() == "null":
            return None
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1].replace("''", "'")
    return value


class Service(BaseModel):
    """One target database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Environment variable that holds the database URL (never the URL itself).
    url_env: str
    schemas: list[str] = Field(default_factory=list)
    #: Subject kinds this service holds (default: every kind).
    subjects: list[str] = Field(default_factory=list)
    #: Per-kind subject columns when this service names them differently.
    subject_columns: dict[str, list[str]] = Field(default_factory=dict)
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    lock_timeout_ms: int = Field(default=5000, ge=1, le=600_000)
    #: Who checks references into removed rows: ``auto`` (Eraser where the role may
    #: switch the database's own triggers off for its batches, PostgreSQL), ``database``
    #: or ``eraser`` (refused with a clear error where it is not available).
    fk_checks: Literal["auto", "database", "eraser"] = "auto"
    #: PostgreSQL: run the commonest walks' batches inside the server, many to a round
    #: trip (``worker.serverloop``); off, every statement is sent from the worker (for
    #: a role that may not run ``DO`` blocks, or to compare the two).
    server_batches: bool = True
    #: PostgreSQL: the batches write their full-page images to the WAL compressed (lz4)
    #: where the role may set ``wal_compression``: about half the WAL of an erasure.
    compress_wal: bool = True
    #: A dedicated Celery queue, so workers can run next to this database.
    queue: str | None = None
    tables: dict[str, TableSettings] = Field(default_factory=dict)
    virtual_fks: list[VirtualForeignKey] = Field(default_factory=list)

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV.match(value):
            raise ValueError("must be the NAME of an environment variable, not a URL")
        return value

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("letters, digits, '-' and '_' only")
        return value

    def policies(self) -> dict[str, TablePolicy]:
        return {name: t.policy() for name, t in self.tables.items()}


class Registry(BaseModel):
    """The whole registry file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subjects: dict[str, SubjectKind]
    services: dict[str, Service]

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        for name in (*self.subjects, *self.services):
            if not _NAME.match(name):
                raise ValueError(f"name {name!r}: letters, digits, '-' and '_' only")
        for name, service in self.services.items():
            for kind in (*service.subjects, *service.subject_columns):
                if kind not in self.subjects:
                    raise ValueError(f"services.{name} names unknown subject kind {kind!r}")
        if not self.services:
            raise ValueError("no services")
        return self

    def services_for(self, kind: str) -> list[str]:
        """Services that hold subjects of ``kind``, in a stable order."""
        return sorted(n for n, s in self.services.items() if not s.subjects or kind in s.subjects)

    def kinds_for(self, service: str) -> list[str]:
        """Subject kinds ``service`` holds."""
        return sorted(k for k in self.subjects if service in self.services_for(k))

    def subject_columns(self, service: str, kind: str) -> list[str]:
        cols = self.services[service].subject_columns.get(kind)
        return list(cols) if cols else self.subjects[kind].subject_columns


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry file; every problem becomes one ``RegistryError``."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{file}: no such registry file") from None
    except OSError as exc:
        raise RegistryError(f"{file}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{file}: not valid TOML: {exc}") from None
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = len(exc.errors()) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise RegistryError(f"{file}: {place}: {first['msg']}{extra}") from None
