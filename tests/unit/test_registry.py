"""The registry file: what it accepts, and the one-line errors for what it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.erasure import TableAction
from models.registry import (
    RedisService,
    RegistryError,
    S3Service,
    Service,
    load_registry,
    value_delimiters,
)

GOOD = """
[subjects.tenant]
column = "tenant_id"

[subjects.user]
columns = ["user_id", "users.id"]
admin_only = true

[services.orders]
url_env = "ORDERS_DATABASE_URL"
schemas = ["public", "billing"]
batch_size = 5000
queue = "orders-db"
[services.orders.tables.customers]
action = "anonymize"
set = { email = "null", name = "'erased'", visits = 0 }
[services.orders.tables.audit]
action = "keep"
[[services.orders.virtual_fks]]
child = "events.order_ref"
parent = "orders.id"

[services.accounts]
url_env = "ACCOUNTS_DATABASE_URL"
subjects = ["user"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_registry_loads(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, GOOD))
    assert reg.services_for("tenant") == ["orders"]
    assert reg.services_for("user") == ["accounts", "orders"]
    assert reg.subject_columns("accounts", "user") == ["user_id", "users.id"]
    orders = reg.services["orders"]
    assert orders.queue == "orders-db"
    policies = orders.policies()
    assert policies["customers"].action is TableAction.ANONYMIZE
    # SQL-style literals: "null" is NULL, "'erased'" is the string erased
    assert policies["customers"].set == {"email": None, "name": "erased", "visits": 0}
    assert policies["audit"].action is TableAction.KEEP
    assert orders.virtual_fks[0].child == ["events.order_ref"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a typo in a field name names the place and the field
        (
            GOOD.replace("batch_size = 5000", "batch_sise = 5000"),
            "services.orders.batch_sise: Extra inputs are not permitted",
        ),
        # a DSN written where the variable name belongs
        (
            GOOD.replace('"ORDERS_DATABASE_URL"', '"postgresql://u:p@h/db"'),
            "services.orders.url_env",
        ),
        # an unknown subject kind in a service
        (GOOD.replace('subjects = ["user"]', 'subjects = ["person"]'), "unknown subject kind"),
        # both ways of naming columns
        (GOOD.replace('column = "tenant_id"', 'column = "a"\ncolumns = ["b"]'), "exactly one"),
        # a policy action that does not exist
        (
            GOOD.replace('action = "keep"', 'action = "shred"'),
            "services.orders.tables.audit.action",
        ),
        # 'nullify' is the engine's, not a policy
        (GOOD.replace('action = "keep"', 'action = "nullify"'), "not a policy"),
        # not TOML at all
        ("[subjects.tenant\ncolumn=1", "not valid TOML"),
    ],
)
def test_invalid_registries_name_file_place_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)
    assert "postgresql://u:p@h/db" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such registry file"):
        load_registry(tmp_path / "nope.toml")


STORES = (
    GOOD
    + """
[services.forecast_cache]
kind = "redis"
url_env = "FORECAST_CACHE_URL"
subjects = ["tenant"]
keys = ["forecast:{value}:*", "tenant:{value}"]
scan_count = 200

[services.artifacts]
kind = "s3"
url_env = "ARTIFACTS_S3_URL"
subjects = ["tenant"]
prefixes = ["tenants/{value}/", "exports/{value}.csv"]
versions = "keep"
queue = "artifacts"
"""
)


def test_redis_and_s3_services_load_beside_sql_ones(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, STORES))
    cache, artifacts, orders = (reg.services[n] for n in ("forecast_cache", "artifacts", "orders"))
    assert isinstance(cache, RedisService)
    assert cache.keys == ["forecast:{value}:*", "tenant:{value}"]
    assert (cache.scan_count, cache.batch_size, cache.cluster) == (200, 500, False)
    assert isinstance(artifacts, S3Service)
    assert (artifacts.versions, artifacts.batch_size, artifacts.queue) == (
        "keep",
        1000,
        "artifacts",
    )
    # a service without ``kind`` is a SQL database, as before
    assert isinstance(orders, Service)
    assert orders.kind == "sql"
    assert reg.services_for("tenant") == ["artifacts", "forecast_cache", "orders"]
    assert reg.sql_service("orders") is orders
    with pytest.raises(RegistryError, match="forecast_cache is a redis service"):
        reg.sql_service("forecast_cache")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # a pattern without {value} would erase every subject's keys
        (
            '"tenant:{value}"]',
            '"tenant:*"]',
            "services.forecast_cache.keys: Value error, 'tenant:*' has no {value}",
        ),
        # a wildcard right after {value}: erasing tenant 1 would take tenant 10's keys
        ('"tenant:{value}"]', '"tenant:{value}*"]', "a wildcard next to {value}"),
        # ... or right before it: tenant 1 would take tenant 21's keys
        ('"tenant:{value}"]', '"tenant:?{value}"]', "a wildcard next to {value}"),
        # an S3 prefix without {value}
        ('"tenants/{value}/"', '"tenants/"', "services.artifacts.prefixes: Value error"),
        # an S3 prefix ending at {value} also names tenant 10's objects for tenant 1
        ('"tenants/{value}/"', '"tenants/{value}"', "end it with a delimiter"),
        # redis fields are checked: a batch beyond a Lua call's stack
        ("scan_count = 200", "batch_size = 10000", "services.forecast_cache.batch_size"),
        # s3 fields are checked
        ('versions = "keep"', 'versions = "sometimes"', "services.artifacts.versions"),
        # a SQL field on a redis service is refused with its place
        ("scan_count = 200", 'schemas = ["public"]', "services.forecast_cache.schemas: Extra"),
        # missing fields
        ('keys = ["forecast:{value}:*", "tenant:{value}"]', "", "services.forecast_cache.keys"),
        ('prefixes = ["tenants/{value}/", "exports/{value}.csv"]', "", "artifacts.prefixes"),
        # a URL where the variable name belongs
        ('"ARTIFACTS_S3_URL"', '"s3://bucket/base"', "services.artifacts.url_env"),
        # a store without subjects in a registry of several kinds: patterns take any value
        ('subjects = ["tenant"]\nprefixes', "prefixes", "name the subject kind(s)"),
        # an http service needs the variable of its signing secret; other kinds are unknown
        ('kind = "s3"', 'kind = "http"', "services.artifacts: Value error, an http service needs"),
        ('kind = "s3"', 'kind = "ftp"', "kind must be 'sql', 'redis', 's3' or 'http'"),
    ],
)
def test_invalid_store_services(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in STORES
    path = write(tmp_path, STORES.replace(old, new, 1))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_value_delimiters() -> None:
    assert value_delimiters("tenant:{value}:*") == {":"}
    assert value_delimiters("tenant:{value}") == set()
    assert value_delimiters("t/{value}/x/{value}.csv") == {"/", "."}
