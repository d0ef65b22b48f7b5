"""Planner behaviour that needs no server: SQLite catalogs, policy checks, warnings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from models.erasure import TableAction, TablePolicy
from worker.catalog.model import Catalog
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.exceptions import PolicyConflict, UnknownSubjectColumn
from worker.execution.erasure import subject_lock_parts
from worker.planning.building import build_plan
from worker.planning.model import EdgeMode

SCHEMA = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY);
CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    email TEXT, name TEXT NOT NULL);
CREATE INDEX customers_tenant ON customers(tenant_id);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id));
CREATE TABLE audit (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id)
    ON DELETE SET NULL);
CREATE INDEX audit_customer ON audit(customer_id);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE order_products (order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id), PRIMARY KEY (order_id, product_id));
CREATE TABLE regions (id INTEGER PRIMARY KEY);
"""


def catalog_of(tmp_path: Path, ddl: str = SCHEMA) -> Catalog:
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.executescript(ddl)
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    try:
        return reflect(engine)
    finally:
        engine.dispose()


def test_membership_follows_references_down_and_never_up(tmp_path: Path) -> None:
    plan = build_plan(catalog_of(tmp_path), ["tenant_id", "tenants.id"])
    names = {str(t) for t in plan.actions}
    # products are referenced by the subject's rows but do not belong to it
    assert names == {
        "main.tenants",
        "main.customers",
        "main.orders",
        "main.order_products",
    }
    assert [str(t) for t in plan.nullified] == ["main.audit"]
    modes = {(str(e.fk.child), e.mode) for edges in plan.children.values() for e in edges}
    assert ("main.audit", EdgeMode.NULLIFY) in modes


def test_plan_is_deterministic(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path)
    first = build_plan(catalog, ["tenant_id"]).as_dict()
    second = build_plan(catalog, ["tenant_id"]).as_dict()
    assert first == second


def test_fingerprint_follows_the_schema(tmp_path: Path) -> None:
    base = catalog_of(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path)
    same = catalog_of(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)
    changed_dir = tmp_path / "c"
    changed_dir.mkdir()
    changed = catalog_of(
        changed_dir, SCHEMA + "CREATE INDEX orders_customer ON orders(customer_id);"
    )
    assert base.fingerprint == same.fingerprint
    assert base.fingerprint != changed.fingerprint


def test_missing_indexes_are_warned_about(tmp_path: Path) -> None:
    plan = build_plan(catalog_of(tmp_path), ["tenant_id", "tenants.id"])
    text = "\n".join(plan.warnings)
    assert "no index on main.orders(customer_id)" in text
    assert "main.customers(tenant_id)" not in text.replace(
        "no index on main.customers(tenant_id) for", ""
    )


def test_unknown_subject_column(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path)
    with pytest.raises(UnknownSubjectColumn, match="org_id"):
        build_plan(catalog, ["org_id"])
    with pytest.raises(UnknownSubjectColumn, match=r"tenants\.nope"):
        build_plan(catalog, ["tenants.nope"])


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        # anonymize needs columns to overwrite
        ({"customers": TablePolicy(action=TableAction.ANONYMIZE)}, "at least one column"),
        # ... that exist
        (
            {"customers": TablePolicy(action=TableAction.ANONYMIZE, set={"phone": None})},
            "unknown column 'phone'",
        ),
        # ... and accept the value
        (
            {"customers": TablePolicy(action=TableAction.ANONYMIZE, set={"name": None})},
            "NOT NULL",
        ),
        # 'set' belongs to anonymize only
        ({"customers": TablePolicy(action=TableAction.KEEP, set={"name": "x"})}, "only valid"),
        # a table the subject owns directly is not a shared entity
        (
            {"customers": TablePolicy(action=TableAction.DELETE_IF_ORPHANED)},
            "delete_if_orphaned is for shared tables",
        ),
        # a shared entity needs a link that belongs to the subject
        (
            {"regions": TablePolicy(action=TableAction.DELETE_IF_ORPHANED)},
            "needs a link table",
        ),
        # anonymized rows would keep pointing at deleted customers
        (
            {"orders": TablePolicy(action=TableAction.ANONYMIZE, set={"id": 0})},
            "set those columns to null",
        ),
    ],
)
def test_policy_conflicts_are_refused(
    tmp_path: Path, policies: dict[str, TablePolicy], message: str
) -> None:
    with pytest.raises(PolicyConflict, match=message):
        build_plan(catalog_of(tmp_path), ["tenant_id", "tenants.id"], policies)


def test_kept_table_stops_membership(tmp_path: Path) -> None:
    plan = build_plan(
        catalog_of(tmp_path),
        ["tenant_id"],
        {"orders": TablePolicy(action=TableAction.KEEP)},
    )
    names = {str(t) for t in plan.actions}
    assert "main.orders" not in names
    assert "main.order_products" not in names


def test_subject_lock_names_the_subject_however_it_is_spelled(tmp_path: Path) -> None:
    catalog = catalog_of(tmp_path)
    one = build_plan(catalog, ["tenant_id", "tenants.id"])
    other = build_plan(catalog, ["tenants.id", "tenant_id"])
    assert subject_lock_parts(one, 1) == subject_lock_parts(other, "1")
    assert subject_lock_parts(one, " 1 ") == subject_lock_parts(one, 1)
    assert subject_lock_parts(one, 1) != subject_lock_parts(one, 2)
