"""Plans are reused while the schema stays the same, and remade when it changes."""

from __future__ import annotations

import sqlalchemy as sa

from models.registry import Service
from tests.conftest import TargetDB
from worker.catalog.version import catalog_version
from worker.dialects import dialect_of
from worker.service import PlanCache


def version(db: TargetDB) -> str:
    with db.engine.connect() as conn:
        return catalog_version(
            conn, dialect_of(db.engine), None if db.backend != "mysql" else [db.default_schema]
        )


def test_a_plan_is_kept_until_the_schema_changes(db: TargetDB) -> None:
    db.run(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL "
        "REFERENCES customers (id))",
    )
    service = Service(url_env="UNUSED")
    cache = PlanCache()
    first = cache.get(db.engine, "shop", service, "tenant", ["tenant_id"])
    assert cache.get(db.engine, "shop", service, "tenant", ["tenant_id"]) is first
    before = version(db)
    assert version(db) == before  # stable when nothing changes

    # A new table referencing the subject's rows must be in the next plan.
    db.run(
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL "
        "REFERENCES customers (id))"
    )
    assert version(db) != before
    second = cache.get(db.engine, "shop", service, "tenant", ["tenant_id"])
    assert second is not first
    assert "invoices" in {t.name for t in second.actions}

    # So must a new index (the plan's warnings depend on indexes).
    again = version(db)
    db.run("CREATE INDEX orders_customer ON orders (customer_id)")
    assert version(db) != again
    third = cache.get(db.engine, "shop", service, "tenant", ["tenant_id"])
    assert third is not second
    assert not any("orders(customer_id)" in w for w in third.warnings)
    if db.backend != "mysql":  # InnoDB indexes every foreign key by itself
        assert any("orders(customer_id)" in w for w in second.warnings)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 0
