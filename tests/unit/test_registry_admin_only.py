"""``admin_only`` guards columns, not names: a registry where an admin-only kind may
resolve to a column a kind without it also resolves to (in one service) is refused,
since a key without ``jobs:admin`` would erase the admin-only subject by naming the
other kind with its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import RegistryError, load_registry


def registry(vip: str, tenant: str, service: str = 'url_env = "SHOP_URL"') -> str:
    return f"""
[subjects.vip]
{vip}
admin_only = true

[subjects.tenant]
{tenant}

[services.shop]
{service}
"""


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "services.toml"
    path.write_text(text, encoding="utf-8")
    load_registry(path)


@pytest.mark.parametrize(
    ("vip", "tenant", "column"),
    [
        # The case: one column for both kinds.
        ('column = "account_id"', 'column = "account_id"', "account_id"),
        # A bare column matches that column in every table, so also accounts.account_id.
        ('column = "accounts.account_id"', 'column = "account_id"', "accounts.account_id"),
        # An unqualified table may be the schema-qualified one.
        ('column = "billing.accounts.id"', 'columns = ["x", "accounts.id"]', "billing.accounts.id"),
        # Identifiers may fold case (MariaDB's columns do).
        ('column = "Account_ID"', 'column = "account_id"', "Account_ID"),
    ],
)
def test_an_admin_only_kind_sharing_a_column_is_refused(
    tmp_path: Path, vip: str, tenant: str, column: str
) -> None:
    with pytest.raises(RegistryError) as caught:
        load(tmp_path, registry(vip, tenant))
    message = str(caught.value)
    assert "admin_only kind 'vip' and kind 'tenant'" in message
    assert "services.shop" in message
    assert f"({column})" in message


@pytest.mark.parametrize(
    ("vip", "tenant"),
    [
        # Different columns.
        ('column = "vip_id"', 'column = "tenant_id"'),
        # One column name, in different tables.
        ('column = "vips.id"', 'column = "tenants.id"'),
        # One table name, in different schemas.
        ('column = "gold.accounts.id"', 'column = "basic.accounts.id"'),
    ],
)
def test_separate_columns_load(tmp_path: Path, vip: str, tenant: str) -> None:
    load(tmp_path, registry(vip, tenant))


def test_a_service_column_override_is_what_counts(tmp_path: Path) -> None:
    """The kinds' default columns differ, but the service maps both to one."""
    text = registry(
        'column = "vip_id"',
        'column = "tenant_id"',
        'url_env = "SHOP_URL"\nsubject_columns = { vip = ["owner"], tenant = ["owner"] }',
    )
    with pytest.raises(RegistryError, match=r"'vip' and kind 'tenant' .*\(owner\)"):
        load(tmp_path, text)


def test_kinds_in_different_services_may_share_a_column_name(tmp_path: Path) -> None:
    text = (
        registry('column = "id"', 'column = "id"', 'url_env = "SHOP_URL"\nsubjects = ["vip"]')
        + '\n[services.crm]\nurl_env = "CRM_URL"\nsubjects = ["tenant"]\n'
    )
    load(tmp_path, text)


def test_both_admin_only_may_share_a_column(tmp_path: Path) -> None:
    load(tmp_path, registry('column = "id"', 'column = "id"\nadmin_only = true'))


def test_a_key_pattern_service_may_not_hold_both(tmp_path: Path) -> None:
    service = 'kind = "redis"\nurl_env = "CACHE_URL"\nsubjects = ["vip", "tenant"]\n'
    service += 'keys = ["acct:{value}"]'
    with pytest.raises(RegistryError, match=r"'vip' and kind 'tenant' share its redis patterns"):
        load(tmp_path, registry('column = "vip_id"', 'column = "tenant_id"', service))
