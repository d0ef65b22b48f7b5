"""The engine on hard schemas, on SQLite, PostgreSQL and MariaDB.

Every case builds a schema and data whose owner is known row by row, erases
tenant 1 and asserts the two things that matter: no row of tenant 1 is left, and
every other row is byte-identical to before (except references that the schema
itself says to clear: ON DELETE SET NULL). The dry run must predict the erasure.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from models.erasure import TableAction, TablePolicy
from tests.conftest import TargetDB, make_db
from tests.integration.known_rows import (
    SUBJECT,
    Data,
    Row,
    child_table,
    col,
    run,
    tenant_child_table,
    tenant_table,
)
from worker.catalog.reflection import reflect
from worker.exceptions import CrossSubjectReference, KeptRowsBlock
from worker.execution import server_batches
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan


def test_composite_foreign_key(db: TargetDB) -> None:
    md = sa.MetaData()
    orders = sa.Table(
        "orders",
        md,
        col("tenant_id", sa.Integer, primary_key=True),
        col("number", sa.Integer, primary_key=True),
        col("total", sa.Integer),
    )
    lines = sa.Table(
        "order_lines",
        md,
        col("id", sa.Integer, primary_key=True),
        col("order_tenant", sa.Integer, nullable=False),
        col("order_number", sa.Integer, nullable=False),
        col("qty", sa.Integer),
        sa.ForeignKeyConstraint(
            ["order_tenant", "order_number"], ["orders.tenant_id", "orders.number"]
        ),
        sa.Index("ix_lines_order", "order_tenant", "order_number"),
    )
    db.create(md)
    data = Data(db)
    line_id = 1
    for owner in (1, 2, 3):
        for number in range(1, 8):  # the same order numbers for every tenant
            data.add(orders, owner, tenant_id=owner, number=number, total=number * owner)
    for owner in (1, 2, 3):
        for number in range(1, 8):
            for _ in range(2):
                data.add(lines, owner, id=line_id, order_tenant=owner, order_number=number, qty=1)
                line_id += 1
    data.load()
    _, report = run(db, ["orders.tenant_id"])
    assert report.total_rows == data.subject_rows() == 21
    assert data.snapshot() == data.expected()


def test_foreign_key_to_unique_non_primary_column(db: TargetDB) -> None:
    md = sa.MetaData()
    accounts = sa.Table(
        "accounts",
        md,
        col("id", sa.Integer, primary_key=True),
        col("code", sa.String(20), nullable=False, unique=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
    )
    sessions = sa.Table(
        "sessions",
        md,
        col("id", sa.Integer, primary_key=True),
        col("account_code", sa.String(20), sa.ForeignKey("accounts.code"), index=True),
    )
    db.create(md)
    data = Data(db)
    for i in range(1, 13):
        owner = 1 + i % 3
        data.add(accounts, owner, id=i, code=f"acc-{i}", tenant_id=owner)
        for j in range(3):
            data.add(sessions, owner, id=i * 10 + j, account_code=f"acc-{i}")
    data.load()
    run(db, ["tenant_id"])
    assert data.snapshot() == data.expected()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_cross_schema_foreign_key(backend: str, tmp_path: Any) -> None:
    """SQLite cannot declare a foreign key into another attached database."""
    gen = make_db(backend, tmp_path)
    db = next(gen)
    try:
        md = sa.MetaData()
        customers = sa.Table(
            "customers",
            md,
            col("id", sa.Integer, primary_key=True),
            col("tenant_id", sa.Integer, nullable=False, index=True),
            schema=db.default_schema,
        )
        other = db.other_schema
        visits = sa.Table(
            "visits",
            md,
            col("id", sa.Integer, primary_key=True),
            col(
                "customer_id",
                sa.Integer,
                sa.ForeignKey(customers.c.id),
                nullable=False,
                index=True,
            ),
            schema=other,
        )
        db.create(md)
        data = Data(db)
        for i in range(1, 10):
            owner = 1 + i % 2
            data.add(customers, owner, id=i, tenant_id=owner)
            data.add(visits, owner, id=i, customer_id=i)
        data.load()
        schemas = [db.default_schema, str(other)]
        _, report = run(db, ["tenant_id"], schemas=schemas)
        assert f"{other}.visits" in {t.table for t in report.tables}
        assert data.snapshot() == data.expected()
    finally:
        gen.close()


def test_quoted_reserved_and_spaced_names(db: TargetDB) -> None:
    md = sa.MetaData()
    order = sa.Table(
        "Order",
        md,
        col("select", sa.Integer, primary_key=True),
        col("Tenant Id", sa.Integer, nullable=False, index=True),
        col("from", sa.String(20)),
    )
    line = sa.Table(
        "order line",
        md,
        col("group", sa.Integer, primary_key=True),
        col("Order Ref", sa.Integer, sa.ForeignKey("Order.select"), nullable=False, index=True),
        col("where", sa.String(20)),
    )
    db.create(md)
    data = Data(db)
    for i in range(1, 11):
        owner = 1 + i % 2
        data.add(order, owner, **{"select": i, "Tenant Id": owner, "from": f"x{i}"})
        data.add(line, owner, **{"group": i, "Order Ref": i, "where": "here"})
    data.load()
    run(db, ["Tenant Id"])
    assert data.snapshot() == data.expected()


def test_tables_without_primary_key(db: TargetDB) -> None:
    md = sa.MetaData()
    orders = tenant_table(md, "orders")
    audit = sa.Table(  # no key at all, duplicates included
        "audit_log",
        md,
        col("tenant_id", sa.Integer, index=True),
        col("message", sa.String(30)),
    )
    notes = sa.Table(  # no key, reached only through a foreign key
        "order_notes",
        md,
        col("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
        col("note", sa.String(30)),
    )
    db.create(md)
    data = Data(db)
    for i in range(1, 9):
        owner = 1 + i % 2
        data.add(orders, owner, id=i, tenant_id=owner)
        for _ in range(3):
            data.add(notes, owner, order_id=i, note="same note")
            data.add(audit, owner, tenant_id=owner, message="duplicate")
    data.load()
    _, report = run(db, ["tenant_id"], batch_size=2)
    assert report.total_rows == data.subject_rows()
    assert data.snapshot() == data.expected()


def test_existing_cascade_and_set_null(db: TargetDB) -> None:
    md = sa.MetaData()
    customers = tenant_table(md, "customers")
    orders = child_table(md, "orders", "customer_id", "customers.id", ondelete="CASCADE")
    items = child_table(md, "items", "order_id", "orders.id", ondelete="CASCADE")
    # Shared notes outlive their author: ON DELETE SET NULL, no tenant column.
    notes = sa.Table(
        "notes",
        md,
        col("id", sa.Integer, primary_key=True),
        col(
            "author_id",
            sa.Integer,
            sa.ForeignKey("customers.id", ondelete="SET NULL"),
            index=True,
        ),
        col("body", sa.String(20)),
    )
    db.create(md)
    data = Data(db)
    for c in range(1, 7):
        owner = 1 + c % 2
        data.add(customers, owner, id=c, tenant_id=owner)
        data.add(notes, 0, id=c, author_id=c, body="kept")
        for o in range(2):
            oid = c * 10 + o
            data.add(orders, owner, id=oid, customer_id=c)
            for k in range(2):
                data.add(items, owner, id=oid * 10 + k, order_id=oid)
    data.load()
    subject_customers = {r["id"] for r, o in data.rows["customers"] if o == SUBJECT}

    def survives(table: sa.Table, row: Row, owner: int) -> Row | None:
        if owner == SUBJECT:
            return None
        if table.name == "notes" and row["author_id"] in subject_customers:
            row["author_id"] = None
        return row

    _, report = run(db, ["tenant_id"])
    outcomes = {(t.table.split(".")[-1], t.action): t.rows for t in report.tables}
    assert outcomes[("notes", TableAction.NULLIFY)] == len(subject_customers)
    assert outcomes[("items", TableAction.DELETE)] == 12
    assert data.snapshot() == data.expected(survives)


def test_partitioned_table(pg: TargetDB) -> None:
    pg.run(
        "CREATE TABLE customers (id int PRIMARY KEY, tenant_id int NOT NULL)",
        "CREATE INDEX ON customers (tenant_id)",
        "CREATE TABLE events (id int, tenant_id int NOT NULL, customer_id int NOT NULL "
        "REFERENCES customers (id), kind text, PRIMARY KEY (tenant_id, id)) "
        "PARTITION BY LIST (tenant_id)",
        "CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1)",
        "CREATE TABLE events_rest PARTITION OF events DEFAULT",
        "CREATE INDEX ON events (customer_id)",
    )
    md = sa.MetaData()
    customers = sa.Table("customers", md, autoload_with=pg.engine)
    events = sa.Table("events", md, autoload_with=pg.engine)
    data = Data(pg)
    for c in range(1, 9):
        owner = 1 + c % 3
        data.add(customers, owner, id=c, tenant_id=owner)
        for e in range(4):
            data.add(events, owner, id=c * 10 + e, tenant_id=owner, customer_id=c, kind="k")
    data.load()
    catalog = reflect(pg.engine)
    names = {str(t) for t in catalog.tables}
    assert "public.events" in names
    assert not {"public.events_1", "public.events_rest"} & names
    assert catalog.tables[catalog.resolve("events")].partitioned
    run(pg, ["tenant_id"])
    assert data.snapshot() == data.expected()


_TRIGGERS = {
    "postgresql": [
        "CREATE FUNCTION log_order_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO audit (tenant_id, what) VALUES (OLD.tenant_id, 'deleted'); "
        "RETURN OLD; END $$",
        "CREATE TRIGGER orders_deleted AFTER DELETE ON orders FOR EACH ROW "
        "EXECUTE FUNCTION log_order_delete()",
    ],
    "mysql": [
        "CREATE TRIGGER orders_deleted AFTER DELETE ON orders FOR EACH ROW "
        "INSERT INTO audit (tenant_id, what) VALUES (OLD.tenant_id, 'deleted')",
    ],
    "sqlite": [
        "CREATE TRIGGER orders_deleted AFTER DELETE ON orders FOR EACH ROW BEGIN "
        "INSERT INTO audit (tenant_id, what) VALUES (OLD.tenant_id, 'deleted'); END",
    ],
}


def test_delete_trigger_that_writes_subject_rows(db: TargetDB) -> None:
    md = sa.MetaData()
    # "a_audit" sorts first, so it is emptied before the trigger writes into it.
    audit = sa.Table(
        "audit",
        md,
        col("id", sa.Integer, primary_key=True, autoincrement=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
        col("what", sa.String(20)),
    )
    orders = tenant_table(md, "orders")
    db.create(md)
    db.run(*_TRIGGERS[db.backend])
    data = Data(db)
    for i in range(1, 11):
        owner = 1 + i % 2
        data.add(orders, owner, id=i, tenant_id=owner)
        # Explicit ids far above what the trigger's sequence will hand out.
        data.add(audit, owner, id=1000 + i, tenant_id=owner, what="created")
    data.load()
    catalog = reflect(db.engine)
    plan = build_plan(catalog, ["tenant_id"])
    assert any("delete trigger" in w for w in plan.warnings)
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=2))
    assert report.verified
    with db.engine.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).select_from(audit).where(audit.c.tenant_id == SUBJECT)
        ).scalar_one()
        others = conn.execute(
            sa.select(sa.func.count()).select_from(audit).where(audit.c.tenant_id != SUBJECT)
        ).scalar_one()
    assert left == 0
    assert others == 5
    snap = data.snapshot()
    assert snap[orders.fullname] == data.expected()[orders.fullname]


def test_twenty_level_chain_reached_only_through_the_root(db: TargetDB) -> None:
    md = sa.MetaData()
    tables = [tenant_table(md, "level_00")]
    for level in range(1, 21):
        parent = tables[-1]
        tables.append(
            sa.Table(
                f"level_{level:02d}",
                md,
                col("id", sa.Integer, primary_key=True),
                col("up", sa.Integer, sa.ForeignKey(parent.c.id), nullable=False, index=True),
            )
        )
    db.create(md)
    data = Data(db)
    # Row k of level L for an owner has id L*100 + owner*10 + k and points at level L-1.
    for level, table in enumerate(tables):
        for owner in (1, 2):
            for k in range(3):
                row_id = level * 100 + owner * 10 + k
                if level == 0:
                    data.add(table, owner, id=row_id, tenant_id=owner)
                else:
                    up = (level - 1) * 100 + owner * 10 + k % 2
                    data.add(table, owner, id=row_id, up=up)
    data.load()
    _, report = run(db, ["tenant_id"], batch_size=3)
    assert report.total_rows == data.subject_rows()
    assert data.snapshot() == data.expected()


def test_shared_entity_through_a_link_table(db: TargetDB) -> None:
    md = sa.MetaData()
    suppliers = sa.Table(
        "suppliers", md, col("id", sa.Integer, primary_key=True), col("name", sa.String(20))
    )
    contacts = child_table(md, "supplier_contacts", "supplier_id", "suppliers.id")
    links = sa.Table(
        "tenant_suppliers",
        md,
        col("tenant_id", sa.Integer, primary_key=True),
        col("supplier_id", sa.Integer, sa.ForeignKey("suppliers.id"), primary_key=True, index=True),
    )
    db.create(md)
    data = Data(db)
    # 1: only tenant 1 links it (goes); 2: tenants 1 and 2 (stays); 3: only tenant 2 (stays).
    for sid, owner in ((1, SUBJECT), (2, 0), (3, 0), (4, SUBJECT)):
        data.add(suppliers, owner, id=sid, name=f"s{sid}")
        data.add(contacts, owner, id=sid * 10, supplier_id=sid)
    for tenant, sid in ((1, 1), (1, 2), (2, 2), (2, 3), (1, 4)):
        data.add(links, tenant, tenant_id=tenant, supplier_id=sid)
    data.load()
    policies = {
        "tenant_suppliers": TablePolicy(action=TableAction.UNLINK),
        "suppliers": TablePolicy(action=TableAction.DELETE_IF_ORPHANED),
    }
    _, report = run(db, ["tenant_id"], policies)
    outcomes = {(t.table.split(".")[-1], t.action): t.rows for t in report.tables}
    assert outcomes[("suppliers", TableAction.DELETE_IF_ORPHANED)] == 2
    assert outcomes[("tenant_suppliers", TableAction.UNLINK)] == 3
    assert data.snapshot() == data.expected()


def test_anonymize_policy(db: TargetDB) -> None:
    md = sa.MetaData()
    customers = sa.Table(
        "customers",
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
        col("email", sa.String(40), nullable=True),
        col("name", sa.String(40), nullable=False),
    )
    orders = child_table(md, "orders", "customer_id", "customers.id")
    db.create(md)
    data = Data(db)
    for i in range(1, 9):
        owner = 1 + i % 2
        data.add(customers, owner, id=i, tenant_id=owner, email=f"u{i}@x.test", name=f"n{i}")
        data.add(orders, owner, id=i, customer_id=i)
    data.load()

    def survives(table: sa.Table, row: Row, owner: int) -> Row | None:
        if owner != SUBJECT:
            return row
        if table.name == "customers":
            return {**row, "email": None, "name": "erased"}
        return None

    policies = {
        "customers": TablePolicy(
            action=TableAction.ANONYMIZE, set={"email": None, "name": "erased"}
        )
    }
    _, report = run(db, ["tenant_id"], policies)
    assert report.total_rows == 4  # orders; anonymized rows are not removed
    assert data.snapshot() == data.expected(survives)


def test_kept_table_that_would_block_refuses_before_touching_anything(db: TargetDB) -> None:
    md = sa.MetaData()
    customers = tenant_table(md, "customers")
    invoices = child_table(md, "invoices", "customer_id", "customers.id")
    db.create(md)
    data = Data(db)
    for i in range(1, 5):
        data.add(customers, 1 + i % 2, id=i, tenant_id=1 + i % 2)
        data.add(invoices, 1 + i % 2, id=i, customer_id=i)
    data.load()
    before = data.snapshot()
    plan = build_plan(
        reflect(db.engine), ["tenant_id"], {"invoices": TablePolicy(action=TableAction.KEEP)}
    )
    with pytest.raises(KeptRowsBlock, match="invoices"):
        dry_run(db.engine, plan, SUBJECT)
    with pytest.raises(KeptRowsBlock, match="invoices"):
        erase(db.engine, plan, SUBJECT)
    assert data.snapshot() == before


def test_another_subjects_rows_referencing_refuses_before_touching_anything(
    db: TargetDB,
) -> None:
    md = sa.MetaData()
    customers = tenant_table(md, "customers")
    orders = tenant_child_table(md, "orders", "customer_id", "customers.id")
    db.create(md)
    data = Data(db)
    data.add(customers, 1, id=1, tenant_id=1)
    data.add(customers, 2, id=2, tenant_id=2)
    data.add(orders, 1, id=1, tenant_id=1, customer_id=1)
    data.add(orders, 2, id=2, tenant_id=2, customer_id=1)  # tenant 2 points at tenant 1
    data.load()
    before = data.snapshot()
    plan = build_plan(reflect(db.engine), ["tenant_id"])
    with pytest.raises(CrossSubjectReference, match="orders"):
        erase(db.engine, plan, SUBJECT)
    assert data.snapshot() == before


def test_rerun_after_partial_erasure_finishes_the_job(
    db: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between batches leaves a consistent state that a re-run completes. (The
    server-side loop on PostgreSQL is made to report after every batch.)"""
    monkeypatch.setattr(server_batches, "_LOOP_SECONDS", 0.0)
    md = sa.MetaData()
    customers = tenant_table(md, "customers")
    orders = child_table(md, "orders", "customer_id", "customers.id")
    db.create(md)
    data = Data(db)
    for i in range(1, 41):
        owner = 1 + i % 2
        data.add(customers, owner, id=i, tenant_id=owner)
        data.add(orders, owner, id=i, customer_id=i)
    data.load()
    plan = build_plan(reflect(db.engine), ["tenant_id"])

    class Crash(Exception):
        pass

    seen = []

    def crash_after_three_batches(progress: Any) -> None:
        seen.append(progress.rows)
        if len(seen) == 3:
            raise Crash

    with pytest.raises(Crash):
        erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=2), crash_after_three_batches)
    remaining = data.snapshot()
    assert sum(len(v) for v in remaining.values()) < sum(
        len(v) for v in data.expected(lambda t, r, o: r).values()
    )
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=2))
    assert report.verified
    assert data.snapshot() == data.expected()


def test_reference_committed_between_child_walk_and_parent_delete(db: TargetDB) -> None:
    """A writer adds a row of the subject after its table was walked: the parent's delete
    then violates a foreign key, and the engine clears the references again."""
    md = sa.MetaData()
    tenants = sa.Table("tenants", md, col("id", sa.Integer, primary_key=True))
    customers = child_table(md, "customers", "tenant_id", "tenants.id")
    orders = sa.Table(
        "orders",
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
        col("customer_id", sa.Integer, sa.ForeignKey("customers.id"), index=True),
    )
    db.create(md)
    db.insert(tenants, [{"id": 1}, {"id": 2}])
    db.insert(customers, [{"id": 1, "tenant_id": 1}, {"id": 2, "tenant_id": 2}])
    db.insert(
        orders,
        [{"id": 1, "tenant_id": 1, "customer_id": 1}, {"id": 2, "tenant_id": 2, "customer_id": 2}],
    )
    plan = build_plan(reflect(db.engine), ["tenant_id", "tenants.id"])
    inserted: list[str] = []

    def progress(p: Any) -> None:
        # Progress runs between batches, on the erasure's thread: a stand-in for another
        # application writer. First a guest order of tenant 1 (customer NULL) appears;
        # it is removed while the tenants row is processed, after that row's customers
        # were cleared: at that moment a new customer of tenant 1 arrives.
        with db.engine.begin() as conn:
            if p.table.endswith("customers") and not inserted:
                inserted.append("guest order")
                conn.execute(sa.insert(orders), {"id": 10, "tenant_id": 1, "customer_id": None})
            elif p.table.endswith("orders") and inserted == ["guest order"]:
                inserted.append("customer")
                conn.execute(sa.insert(customers), {"id": 11, "tenant_id": 1})

    # The scenario is the database's own check refusing the parent's delete; with
    # Eraser checking (tests below) the new customer's insert fails instead.
    options = ExecutionOptions(batch_size=10, fk_checks="database")
    report = erase(db.engine, plan, SUBJECT, options, progress)
    assert inserted == ["guest order", "customer"]
    assert report.verified
    with db.engine.connect() as conn:
        left = [
            conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.tenant_id == 1)
            ).scalar_one()
            for t in (customers, orders)
        ]
        others = conn.execute(sa.select(sa.func.count()).select_from(customers)).scalar_one()
    assert left == [0, 0]
    assert others == 1


def test_child_rows_with_a_null_subject_column_are_found_through_their_parent(
    db: TargetDB,
) -> None:
    """orders.tenant_id is NULL on some rows: only their customer ties them to the
    subject. The orders walk (tenant_id = :subject) misses them; the customers' delete
    must still find them (here through the retry after a foreign-key refusal)."""
    md = sa.MetaData()
    customers = tenant_table(md, "customers")
    orders = tenant_child_table(md, "orders", "customer_id", "customers.id", tenant_nullable=True)
    db.create(md)
    data = Data(db)
    for c in range(1, 9):
        owner = 1 + c % 2
        data.add(customers, owner, id=c, tenant_id=owner)
        data.add(orders, owner, id=c * 10, tenant_id=owner, customer_id=c)
        data.add(orders, owner, id=c * 10 + 1, tenant_id=None, customer_id=c)  # guest order
    data.load()
    _, report = run(db, ["tenant_id"], batch_size=2)
    assert report.total_rows == data.subject_rows() == 12
    assert data.snapshot() == data.expected()


def test_a_text_subject_matches_exactly_whatever_the_collation(db: TargetDB) -> None:
    """MariaDB's default collation says 'Kunde-Ü' = 'kunde-u' and 'a ' = 'a': only
    the exact value may be erased (the engine adds a binary comparison there)."""
    md = sa.MetaData()
    owners = sa.Table(
        "owners",
        md,
        col("id", sa.Integer, primary_key=True),
        col("owner_key", sa.String(40), nullable=False, index=True),
    )
    notes = child_table(md, "notes", "owner_id", "owners.id")
    db.create(md)
    keys = ["kunde-u", "Kunde-Ü", "KUNDE-U", "kunde-u ", "kunde-ü"]
    db.insert(owners, [{"id": i, "owner_key": k} for i, k in enumerate(keys)])
    db.insert(notes, [{"id": i, "owner_id": i % len(keys)} for i in range(20)])
    before = db.snapshot(owners, notes)
    plan = build_plan(reflect(db.engine), ["owner_key"])
    assert dry_run(db.engine, plan, "kunde-u").total_rows == 5
    report = erase(db.engine, plan, "kunde-u", ExecutionOptions(batch_size=2))
    assert report.verified
    assert report.total_rows == 5
    after = db.snapshot(owners, notes)
    assert after["owners"] == [r for r in before["owners"] if r[1] != "kunde-u"]
    assert after["notes"] == [r for r in before["notes"] if r[1] != 0]
