"""The registry file: what it accepts, and the one-line errors for what it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.erasure import TableAction
from models.registry import RegistryError, load_registry

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
