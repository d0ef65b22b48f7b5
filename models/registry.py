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

A service has a ``kind``: ``sql`` (the default, a database reached with a DSN),
``redis`` (key patterns), ``s3`` (object prefixes) or ``http`` (a service that erases
its own data when Eraser asks, through the signed protocol of docs/stores.md)::

    [services.forecast_cache]
    kind = "redis"
    url_env = "FORECAST_CACHE_URL"
    keys = ["forecast:{value}:*", "tenant:{value}"]

    [services.model_artifacts]
    kind = "s3"
    url_env = "ARTIFACTS_S3_URL"          # s3://bucket[/base]
    prefixes = ["tenants/{value}/"]

    [services.billing]
    kind = "http"
    url_env = "BILLING_ERASER_URL"        # the service's base URL; Eraser POSTs {base}/erasures
    secret_env = "BILLING_ERASER_SECRET"  # the shared signing secret (Standard Webhooks)

An invalid file raises ``RegistryError`` naming the file, the place and the field.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from models.erasure import ScalarValue, TableAction, TablePolicy

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Where a key pattern or an object prefix takes the subject's value.
VALUE_PLACEHOLDER = "{value}"
#: Redis glob metacharacters: next to ``{value}`` they would match other subjects' keys.
_GLOB = frozenset("*?[]")


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
    #: For ``reassign``: the placeholder row's key.
    reassign_to: ScalarValue = None

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
        return TablePolicy(action=self.action, set=dict(self.set), reassign_to=self.reassign_to)


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
    """One target SQL database (``kind = "sql"``, the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["sql"] = "sql"
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
    #: trip (``worker.execution.serverloop``); off, every statement is sent from the worker (for
    #: a role that may not run ``DO`` blocks, or to compare the two).
    server_batches: bool = True
    #: PostgreSQL: the batches write their full-page images to the WAL compressed (lz4)
    #: where the role may set ``wal_compression``: about half the WAL of an erasure.
    compress_wal: bool = True
    #: A subject's own LIST partition (bound to its value alone): ``truncate`` it (kept,
    #: empty), ``drop`` it (detached and dropped), or erase its ``rows`` one batch at a
    #: time (see the engine's Partitions section).
    partitions: Literal["truncate", "drop", "rows"] = "truncate"
    #: A dedicated Celery queue, so workers can run next to this database.
    queue: str | None = None
    tables: dict[str, TableSettings] = Field(default_factory=dict)
    virtual_fks: list[VirtualForeignKey] = Field(default_factory=list)

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        return _env_variable(value)

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return _queue(value)

    def policies(self) -> dict[str, TablePolicy]:
        return {name: t.policy() for name, t in self.tables.items()}


#: Another name for ``Service``, for code that handles every kind.
SqlService = Service


class _StoreService(BaseModel):
    """What every service that is not a SQL database has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Environment variable that holds the store's URL (never the URL itself).
    url_env: str
    #: Subject kinds this service holds; required when the registry has more than one
    #: kind, since a pattern says nothing of the kind of value it takes.
    subjects: list[str] = Field(default_factory=list)
    #: A dedicated Celery queue, so workers can run next to this store.
    queue: str | None = None

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        return _env_variable(value)

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return _queue(value)


class RedisService(_StoreService):
    """A Redis (or Valkey) database: the subject's keys are found by glob patterns."""

    kind: Literal["redis"]
    #: Glob patterns; ``{value}`` is the subject's value, escaped so it matches only
    #: itself. Each pattern must hold ``{value}``, with no wildcard right next to it.
    keys: list[str] = Field(min_length=1)
    #: ``SCAN``'s ``COUNT`` hint: keys the server looks at per call.
    scan_count: int = Field(default=1000, ge=1, le=100_000)
    #: Keys removed per ``UNLINK`` (bounded: the keys go through a Lua call's stack).
    batch_size: int = Field(default=500, ge=1, le=5000)
    #: A Redis Cluster: scan every primary node (see docs/stores.md).
    cluster: bool = False

    @field_validator("keys")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            _needs_value(pattern)
            for before, after in _neighbours(pattern):
                if before in _GLOB or after in _GLOB:
                    raise ValueError(
                        f"pattern {pattern!r}: a wildcard next to {VALUE_PLACEHOLDER} would "
                        "match other subjects' keys (subject 1 would match 10)"
                    )
        return value


class S3Service(_StoreService):
    """An S3 bucket (or an S3-compatible store): the subject's objects are found by prefix."""

    kind: Literal["s3"]
    #: Object key prefixes below the URL's base; ``{value}`` is the subject's value,
    #: used literally. ``{value}`` must be followed by a delimiter (``tenants/{value}/``):
    #: ``tenants/{value}`` would also name tenant 10's objects when erasing tenant 1.
    prefixes: list[str] = Field(min_length=1)
    #: In a versioned bucket: ``delete`` every version and delete marker under the
    #: prefix, or ``keep`` the older versions and delete only the current objects.
    versions: Literal["delete", "keep"] = "delete"
    #: Keys per ``DeleteObjects`` call (S3 takes at most 1,000).
    batch_size: int = Field(default=1000, ge=1, le=1000)

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            _needs_value(prefix)
            if prefix.endswith(VALUE_PLACEHOLDER):
                raise ValueError(
                    f"prefix {prefix!r}: end it with a delimiter after {VALUE_PLACEHOLDER} "
                    "(e.g. '/'): as written it also names other subjects' objects"
                )
        return value


class HttpService(_StoreService):
    """A service that erases its own data: Eraser POSTs a signed request to
    ``{base}/erasures`` and polls ``{base}/erasures/{job_id}`` (docs/stores.md)."""

    kind: Literal["http"]
    #: Environment variable that holds the signing secret shared with the service
    #: (Standard Webhooks: base64, optionally prefixed ``whsec_``), never the secret.
    secret_env: str
    #: How long one request may take.
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: How long one execution polls a running erasure before the task continues it in a
    #: new delivery (the same job id: the service answers with the same erasure).
    wait_seconds: float = Field(default=120.0, gt=0, le=3600)
    #: The longest pause between two polls (they start at a quarter of a second and double).
    poll_max_seconds: float = Field(default=5.0, gt=0, le=300)

    @model_validator(mode="before")
    @classmethod
    def _needs_env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for field, holds in (("url_env", "its base URL"), ("secret_env", "its signing secret")):
                if field not in value:
                    raise ValueError(
                        f"an http service needs {field}: the NAME of the environment variable "
                        f"holding {holds}"
                    )
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return _env_variable(value)

    @property
    def batch_size(self) -> int:
        """An http service batches on its own side: 0 here (``GET /v1/services``)."""
        return 0


#: A registered service that is not a SQL database.
StoreService = RedisService | S3Service | HttpService


def _env_variable(value: str) -> str:
    if not _ENV.match(value):
        raise ValueError("must be the NAME of an environment variable, not a URL")
    return value


def _queue(value: str | None) -> str | None:
    if value is not None and not _NAME.match(value):
        raise ValueError("letters, digits, '-' and '_' only")
    return value


def _needs_value(template: str) -> None:
    if VALUE_PLACEHOLDER not in template:
        raise ValueError(
            f"{template!r} has no {VALUE_PLACEHOLDER}: it would erase other subjects' data"
        )


def _neighbours(template: str) -> list[tuple[str, str]]:
    """The characters right before and after each ``{value}`` ('' at either end)."""
    found = []
    start = template.find(VALUE_PLACEHOLDER)
    while start >= 0:
        end = start + len(VALUE_PLACEHOLDER)
        found.append((template[start - 1 : start], template[end : end + 1]))
        start = template.find(VALUE_PLACEHOLDER, end)
    return found


def value_delimiters(template: str) -> set[str]:
    """Characters a subject value may not hold for ``template``: the one right after each
    ``{value}``. A value holding it would reach into another subject's keys
    (``tenant:{value}:*`` with ``1:x`` names keys of tenant ``1``)."""
    return {after for _, after in _neighbours(template) if after}


def _service_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "sql"))
    return str(getattr(value, "kind", "sql"))


#: A registered service of any kind, told apart by ``kind``.
AnyService = Annotated[
    Annotated[Service, Tag("sql")]
    | Annotated[RedisService, Tag("redis")]
    | Annotated[S3Service, Tag("s3")]
    | Annotated[HttpService, Tag("http")],
    Discriminator(
        _service_kind,
        custom_error_type="service_kind",
        custom_error_message="kind must be 'sql', 'redis', 's3' or 'http'",
    ),
]
#: Kinds a service may have, in the registry's own words.
KINDS = ("sql", "redis", "s3", "http")


class Registry(BaseModel):
    """The whole registry file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subjects: dict[str, SubjectKind]
    services: dict[str, AnyService]

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        for name in (*self.subjects, *self.services):
            if not _NAME.match(name):
                raise ValueError(f"name {name!r}: letters, digits, '-' and '_' only")
        for name, service in self.services.items():
            named = service.subject_columns if isinstance(service, Service) else {}
            for kind in (*service.subjects, *named):
                if kind not in self.subjects:
                    raise ValueError(f"services.{name} names unknown subject kind {kind!r}")
            # An http service is told the subject kind; patterns and prefixes are not.
            patterns = isinstance(service, RedisService | S3Service)
            if patterns and not service.subjects and len(self.subjects) > 1:
                raise ValueError(
                    f"services.{name}: name the subject kind(s) its {service.kind} "
                    "patterns hold (subjects = [...]): they would take every kind's values"
                )
        if not self.services:
            raise ValueError("no services")
        _admin_only_columns_are_private(self)
        return self

    def services_for(self, kind: str) -> list[str]:
        """Services that hold subjects of ``kind``, in a stable order."""
        return sorted(n for n, s in self.services.items() if not s.subjects or kind in s.subjects)

    def kinds_for(self, service: str) -> list[str]:
        """Subject kinds ``service`` holds."""
        return sorted(k for k in self.subjects if service in self.services_for(k))

    def subject_columns(self, service: str, kind: str) -> list[str]:
        entry = self.services[service]
        cols = entry.subject_columns.get(kind) if isinstance(entry, Service) else None
        return list(cols) if cols else self.subjects[kind].subject_columns

    def sql_service(self, name: str) -> Service:
        """The SQL service ``name``; ``RegistryError`` when it is of another kind (the
        SQL engine's callers use this until every kind is wired into the tasks)."""
        entry = self.services[name]
        if not isinstance(entry, Service):
            raise RegistryError(f"services.{name} is a {entry.kind} service, not a SQL database")
        return entry


def _admin_only_columns_are_private(registry: Registry) -> None:
    """Refuse an ``admin_only`` kind that may resolve to a column a kind without it also
    resolves to, in one service: a key without ``jobs:admin`` would erase the admin-only
    subject by naming the other kind with its value. Columns are compared as the planner
    resolves them (``column`` matches that column in every table; ``table.column`` and
    ``schema.table.column`` one table), case-insensitively: what may match is refused.
    A Redis or S3 service's patterns take every kind it holds, so it may not hold both."""
    for name, service in registry.services.items():
        kinds = registry.kinds_for(name)
        admin = [k for k in kinds if registry.subjects[k].admin_only]
        others = [k for k in kinds if not registry.subjects[k].admin_only]
        for guarded in admin:
            for other in others:
                if isinstance(service, RedisService | S3Service):
                    raise ValueError(
                        f"services.{name}: admin_only kind {guarded!r} and kind {other!r} share "
                        f"its {service.kind} patterns (a key without jobs:admin could erase "
                        f"a {guarded} as a {other}); give them separate services"
                    )
                if not isinstance(service, Service):
                    continue  # a kind of service that tells the kinds apart itself
                shared = _shared_column(
                    registry.subject_columns(name, guarded), registry.subject_columns(name, other)
                )
                if shared is not None:
                    raise ValueError(
                        f"services.{name}: admin_only kind {guarded!r} and kind {other!r} may "
                        f"resolve to the same column ({shared}): a key without jobs:admin could "
                        f"erase a {guarded} as a {other}; make both admin_only or use "
                        "different columns"
                    )


def _shared_column(first: list[str], second: list[str]) -> str | None:
    """A column spec of ``first`` that may name a column one of ``second`` names."""
    for a in first:
        for b in second:
            if _may_overlap(a.casefold().split("."), b.casefold().split(".")):
                return a if len(a) >= len(b) else b
    return None


def _may_overlap(a: list[str], b: list[str]) -> bool:
    """Two ``[schema.][table.]column`` specs, split: equal columns, and equal tables
    (and schemas) wherever both name one."""
    if a[-1] != b[-1]:
        return False
    tables = (a[:-1][::-1], b[:-1][::-1])  # table first, then schema
    return all(x == y for x, y in zip(*tables, strict=False))


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
        place = ".".join(str(p) for p in _place(first["loc"])) or "(top level)"
        more = len(exc.errors()) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise RegistryError(f"{file}: {place}: {first['msg']}{extra}") from None


def _place(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The error's place without pydantic's union tag (``services.cache.redis.keys`` is
    ``services.cache.keys`` in the file)."""
    if len(loc) > 2 and loc[0] == "services" and loc[2] in KINDS:
        return (*loc[:2], *loc[3:])
    return loc
