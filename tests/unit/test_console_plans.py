"""The preview's plan as the console draws it: the tree of ``api.plan_tree`` (the one
``eraser plan`` draws) as nested lists with the dry run's counts, the shared entities
broken out, cycles, warnings, and actions the console has no words for."""

from __future__ import annotations

import sqlite3
from html.parser import HTMLParser
from pathlib import Path

from api.console.pages import templates
from api.console.plans import ActionTotal, ServicePlan, service_plan
from api.plan_tree import NodeKind, PlanNode
from models.erasure import TableAction, TablePolicy
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.planning.building import build_plan
from worker.planning.model import Plan

#: Customers (anonymized) own orders; orders link to shared products through
#: order_products; categories reference themselves; audit rows reference orders
#: ON DELETE SET NULL; orders.customer_id has no index.
SCHEMA = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY);
CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    email TEXT, name TEXT NOT NULL);
CREATE INDEX customers_tenant ON customers(tenant_id);
CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
    customer_id INTEGER NOT NULL REFERENCES customers(id));
CREATE INDEX orders_tenant ON orders(tenant_id);
CREATE TABLE audit (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id)
    ON DELETE SET NULL);
CREATE INDEX audit_order ON audit(order_id);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE order_products (order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id), PRIMARY KEY (order_id, product_id));
CREATE INDEX order_products_product ON order_products(product_id);
CREATE TABLE categories (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,
    parent_id INTEGER REFERENCES categories(id));
CREATE INDEX categories_tenant ON categories(tenant_id);
CREATE INDEX categories_parent ON categories(parent_id);
"""

COUNTS = {
    ("main.customers", "anonymize"): 2,
    ("main.orders", "delete"): 5,
    ("main.order_products", "unlink"): 7,
    ("main.products", "delete_if_orphaned"): 3,
    ("main.audit", "nullify"): 4,
    ("main.categories", "delete"): 6,
}


def plan_of(tmp_path: Path) -> Plan:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    try:
        catalog = reflect(engine)
    finally:
        engine.dispose()
    return build_plan(
        catalog,
        ["tenant_id"],
        {
            "customers": TablePolicy(action=TableAction.ANONYMIZE, set={"email": None}),
            "products": TablePolicy(action=TableAction.DELETE_IF_ORPHANED),
            "order_products": TablePolicy(action=TableAction.UNLINK),
        },
    )


class Tree(HTMLParser):
    """The page's plan tree: each ``li[data-table]``'s parent ``li`` and attributes,
    and the text of the shared entities' table."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict[str, str]] = []
        self.nodes: list[tuple[str | None, dict[str, str]]] = []
        self.rows: dict[str, str] = {}
        self.in_shared = False
        self.shared_text: list[str] = []
        self._open_rows: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "li" and "data-table" in found:
            parent = self.stack[-1]["data-table"] if self.stack else None
            self.nodes.append((parent, found))
            self.stack.append(found)
        if tag == "table" and found.get("class") == "shared":
            self.in_shared = True
        if tag == "strong" and "data-rows" in found and self.stack:
            self.rows.setdefault(self.stack[-1]["data-table"], found["data-rows"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self.stack:
            self.stack.pop()
        if tag == "table":
            self.in_shared = False

    def handle_data(self, data: str) -> None:
        if self.in_shared:
            self.shared_text.append(data)


def render(plans: list[ServicePlan], counted: bool = True) -> str:
    macro = templates.env.get_template("_plans.html").module.plans_section  # type: ignore[attr-defined]
    return str(macro(plans, counted))


def test_the_tree_puts_children_under_parents_with_the_dry_runs_counts(tmp_path: Path) -> None:
    html = render([service_plan("shop", plan_of(tmp_path), COUNTS)])
    tree = Tree()
    tree.feed(html)
    parents = {(attrs["data-table"], attrs["data-kind"]): parent for parent, attrs in tree.nodes}
    # The subject's own table (tenants) is the root, kept; anchors under it.
    assert parents[("main.tenants", "outside")] is None
    assert parents[("main.customers", "table")] == "main.tenants"
    assert parents[("main.orders", "table")] in {"main.customers", None}
    assert parents[("main.order_products", "table")] == "main.orders"
    assert parents[("main.audit", "nullify")] == "main.orders"
    assert tree.rows["main.customers"] == "2"
    assert tree.rows["main.orders"] == "5"
    assert tree.rows["main.audit"] == "4"
    actions = {attrs["data-table"]: attrs["data-action"] for _, attrs in tree.nodes}
    assert actions["main.customers"] == "anonymize"
    assert actions["main.products"] == "delete_if_orphaned"
    # What anonymize overwrites, the self-reference's strategy, the missing index.
    assert "email=None" in html
    assert "self-reference: tree" in html
    assert "no index on main.orders(customer_id)" in html
    # Collapsible subtrees, no script.
    assert "<details open><summary>" in html
    assert "<script" not in html


def test_shared_entities_are_broken_out_with_their_counts(tmp_path: Path) -> None:
    plan = service_plan("shop", plan_of(tmp_path), COUNTS)
    html = render([plan])
    tree = Tree()
    tree.feed(html)
    shared = " ".join(" ".join(tree.shared_text).split())
    assert "shop main.products main.order_products : 7 3" in shared
    assert "Shared entities: unlinked, not deleted" in html
    # Per action, its tables and rows: the anonymized rows are not counted as deleted.
    assert "anonymized (the rows stay" in html
    words = "unlinked (only the subject's links are deleted)"
    assert ActionTotal("unlink", words, 1, 7) in plan.actions


def test_an_action_the_console_does_not_know_shows_by_its_name() -> None:
    node = PlanNode("main.invoices", NodeKind.TABLE, "reassign", rows=9, detail="to='archive'")
    plans = [
        ServicePlan(
            "billing",
            forest=[node],
            actions=[ActionTotal("reassign", "reassign", 1, 9)],
        )
    ]
    html = render(plans)
    assert '<span class="tag a-reassign">reassign</span>' in html
    assert "to=&#39;archive&#39;" in html
    assert 'data-rows="9"' in html


def test_a_refused_plan_says_why() -> None:
    html = render([ServicePlan("billing", error="policy conflict: keep would block a delete")])
    assert "Refused, cannot plan: policy conflict: keep would block a delete" in html


def test_without_counts_the_tree_has_no_rows(tmp_path: Path) -> None:
    html = render([service_plan("shop", plan_of(tmp_path), None)], counted=False)
    assert "data-rows" not in html
    assert 'data-counted="no"' in html
