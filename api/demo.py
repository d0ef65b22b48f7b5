"""``eraser demo``: the engine's whole job on an embedded SQLite database.

Builds a small multi-tenant shop (a category tree, a store/manager cycle, orders with
lines, suppliers shared between tenants through a link table, notes that outlive
their author), fills three tenants, then plans, dry-runs and erases one tenant and
proves that the other tenants are byte-for-byte untouched. No server needed.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from models.erasure import TableAction, TablePolicy
from worker.catalog import reflect
from worker.database import create_engine
from worker.executor import ExecutionOptions, Progress, dry_run, erase
from worker.planner import build_plan

TENANTS = (1, 2, 3)


def build_estate(metadata: sa.MetaData) -> dict[str, sa.Table]:
    """The demo schema: every hard shape the engine handles, in one small shop."""

    def t(name: str, *cols: Any) -> sa.Table:
        return sa.Table(name, metadata, *cols)

    def pk() -> sa.Column[int]:
        return sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)

    def tenant() -> sa.Column[int]:
        return sa.Column("tenant_id", sa.Integer, nullable=False, index=True)

    def ref(name: str, target: str, **kw: Any) -> sa.Column[int]:
        kw.setdefault("nullable", False)
        return sa.Column(
            name, sa.Integer, sa.ForeignKey(target, **kw.pop("fk", {})), index=True, **kw
        )

    return {
        "tenants": t("tenants", pk(), sa.Column("name", sa.String(40))),
        "stores": t(
            "stores",
            pk(),
            tenant(),
            ref("manager_id", "employees.id", nullable=True, fk={"use_alter": True}),
        ),
        "employees": t(
            "employees", pk(), ref("store_id", "stores.id"), sa.Column("name", sa.String(40))
        ),
        "categories": t(
            "categories", pk(), tenant(), ref("parent_id", "categories.id", nullable=True)
        ),
        "products": t("products", pk(), tenant(), ref("category_id", "categories.id")),
        "customers": t("customers", pk(), tenant(), sa.Column("email", sa.String(80))),
        "orders": t(
            "orders",
            pk(),
            tenant(),
            ref("customer_id", "customers.id"),
            ref("store_id", "stores.id"),
        ),
        "order lines": t(
            "order lines", pk(), ref("order_id", "orders.id"), ref("product_id", "products.id")
        ),
        "suppliers": t("suppliers", pk(), sa.Column("name", sa.String(40))),
        "supplier_contacts": t("supplier_contacts", pk(), ref("supplier_id", "suppliers.id")),
        "tenant_suppliers": t(
            "tenant_suppliers",
            sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
            sa.Column("supplier_id", sa.Integer, sa.ForeignKey("suppliers.id"), primary_key=True),
        ),
        "notes": t(
            "notes",
            pk(),
            ref("author_id", "customers.id", nullable=True, fk={"ondelete": "SET NULL"}),
            sa.Column("body", sa.String(80)),
        ),
    }


POLICIES = {
    "tenant_suppliers": TablePolicy(action=TableAction.UNLINK),
    "suppliers": TablePolicy(action=TableAction.DELETE_IF_ORPHANED),
}


def seed(engine: sa.Engine, tables: dict[str, sa.Table], scale: int = 40) -> None:
    """Fill every tenant with realistic shapes; ids are global so tenants interleave."""
    rnd = random.Random(7)  # noqa: S311 - repeatable demo data, not secrets
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    ids: dict[str, int] = dict.fromkeys(tables, 0)

    def add(table: str, **values: Any) -> int:
        ids[table] += 1
        rows[table].append({"id": ids[table], **values})
        return ids[table]

    for sid in range(1, 6):
        rows["suppliers"].append({"id": sid, "name": f"supplier {sid}"})
        rows["supplier_contacts"].append({"id": sid, "supplier_id": sid})
    shared = {1: [1, 2], 2: [2, 3], 3: [3, 4]}  # supplier 1 is tenant 1's alone
    for tenant in TENANTS:
        rows["tenants"].append({"id": tenant, "name": f"tenant {tenant}"})
        for sid in shared[tenant]:
            rows["tenant_suppliers"].append({"tenant_id": tenant, "supplier_id": sid})
        stores = []
        for _ in range(3):
            store = add("stores", tenant_id=tenant, manager_id=None)
            staff = [add("employees", store_id=store, name="e") for _ in range(4)]
            rows["stores"][-1]["manager_id"] = staff[0]
            stores.append(store)
        parent = None
        cats = []
        for _ in range(8):  # a category tree eight levels deep
            parent = add("categories", tenant_id=tenant, parent_id=parent)
            cats.append(parent)
        products = [
            add("products", tenant_id=tenant, category_id=rnd.choice(cats)) for _ in range(scale)
        ]
        for _ in range(scale):
            customer = add("customers", tenant_id=tenant, email="someone@example.test")
            add("notes", author_id=customer, body="a note the shop keeps")
            for _ in range(3):
                order = add(
                    "orders", tenant_id=tenant, customer_id=customer, store_id=rnd.choice(stores)
                )
                for _ in range(rnd.randint(1, 4)):
                    add("order lines", order_id=order, product_id=rnd.choice(products))
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        for name, table in tables.items():
            if rows[name]:
                conn.execute(sa.insert(table), rows[name])


def tenant_digest(engine: sa.Engine, tables: dict[str, sa.Table], tenant: int) -> str:
    """A digest of every row that belongs to ``tenant`` through a tenant_id column."""
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for name in sorted(tables):
            table = tables[name]
            if "tenant_id" not in table.c:
                continue
            for row in conn.execute(
                sa.select(table).where(table.c.tenant_id == tenant).order_by(*table.primary_key)
            ):
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()[:16]


def run_demo(out: TextIO, workdir: Path | None = None, subject: int = 1) -> bool:
    """Run the demo, writing a report to ``out``. True when the erasure verified."""
    with tempfile.TemporaryDirectory(prefix="eraser-demo-") as tmp:
        path = (workdir or Path(tmp)) / "shop.db"
        path.unlink(missing_ok=True)
        engine = create_engine(f"sqlite:///{path}")
        metadata = sa.MetaData()
        tables = build_estate(metadata)
        metadata.create_all(engine)
        seed(engine, tables)
        before = {t: tenant_digest(engine, tables, t) for t in TENANTS}
        out.write(
            f"Eraser demo: a shop with {len(tables)} tables and {len(TENANTS)} tenants "
            f"(SQLite, {path.name})\n\n"
        )

        plan = build_plan(reflect(engine), ["tenant_id", "tenants.id"], POLICIES)
        out.write(f"Plan for tenant {subject} (children first):\n")
        for i, step in enumerate(plan.steps, 1):
            out.write(f"  {i:>2}. {step.table!s:<24} {step.action.value}\n")
        for cycle in plan.cycles:
            out.write(
                f"  cycle {' -> '.join(cycle.path)}\n        broken by: {cycle.strategy.value}\n"
            )

        preview = dry_run(engine, plan, subject)
        out.write(f"\nDry run (read-only): {preview.total_rows} rows would be removed\n")

        batches = 0

        def progress(_: Progress) -> None:
            nonlocal batches
            batches += 1

        report = erase(engine, plan, subject, ExecutionOptions(batch_size=50), progress)
        out.write(
            f"Erasure: {report.total_rows} rows in {batches} batches, "
            f"{report.elapsed_seconds:.2f}s\n"
        )
        for outcome in report.tables:
            out.write(f"  {outcome.table:<24} {outcome.action.value:<18} {outcome.rows:>6}\n")
        match = "matches" if preview.total_rows == report.total_rows else "DIFFERS FROM"
        out.write(f"The erasure {match} the dry run.\n")
        verdict = "verified: no row of the subject remains" if report.verified else "NOT VERIFIED"
        out.write(f"{verdict} ({report.passes} pass)\n")

        after = {t: tenant_digest(engine, tables, t) for t in TENANTS}
        others_ok = all(before[t] == after[t] for t in TENANTS if t != subject)
        for t in TENANTS:
            if t == subject:
                continue
            state = "untouched" if before[t] == after[t] else "CHANGED"
            out.write(f"tenant {t}: {state} (digest {after[t]})\n")
        engine.dispose()
        return report.verified and others_ok and preview.total_rows == report.total_rows
