"""The bakery estate's schema: twelve service databases, one ``MetaData`` each.

A SaaS for bakeries, split the way such a product grows: every service owns its
database and no foreign key crosses from one to another (a service refers to another
service's rows by plain ``*_ref`` columns). Inside each database the references are
real, and between them they hold every shape the engine must handle:

- a self-referencing tree (``inventory.categories``, five levels deep);
- a two-table cycle (``pos.stores.manager_id`` and ``pos.employees.store_id``);
- a tree kept in a link table (``recipes.recipe_components``, sub-recipes);
- shared rows behind a link table (``suppliers``, ``tenant_suppliers``) and shared rows
  that must stay (``external.weather_stations``, ``weather_observations``);
- composite primary and foreign keys (``forecasting``, ``training``, ``sales``);
- ``ON DELETE CASCADE``, ``SET NULL`` and plain references side by side;
- a table without a primary key (``notifications.delivery_log``).

Every tenant-owned root table has an INTEGER ``tenant_id``; money is in integer
cents. Every foreign-key and ``tenant_id`` column is indexed, so plans carry no
index warnings.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import sqlalchemy as sa

#: The estate's services, one database each.
SERVICES: tuple[str, ...] = (
    "orders",
    "inventory",
    "recipes",
    "sales",
    "production",
    "suppliers",
    "pos",
    "external",
    "forecasting",
    "training",
    "alerts",
    "notifications",
)

CASCADE = "CASCADE"
SET_NULL = "SET NULL"


def metadata_for(service: str) -> sa.MetaData:
    """A fresh ``MetaData`` holding ``service``'s tables (``KeyError`` for an unknown name)."""
    metadata = sa.MetaData()
    _BUILDERS[service](metadata)
    return metadata


# --- column helpers ----------------------------------------------------------------


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)


def _tenant(*, primary_key: bool = False) -> sa.Column[int]:
    # In a composite primary key that starts with it, the key is the index.
    return sa.Column(
        "tenant_id", sa.Integer, nullable=False, primary_key=primary_key, index=not primary_key
    )


def _ref(
    name: str,
    target: str,
    *,
    nullable: bool = False,
    ondelete: str | None = None,
    primary_key: bool = False,
    index: bool = True,
) -> sa.Column[int]:
    """An INTEGER reference to ``target`` (``table.column``), indexed unless a key covers it."""
    return sa.Column(
        name,
        sa.Integer,
        sa.ForeignKey(target, ondelete=ondelete),
        nullable=nullable,
        primary_key=primary_key,
        index=index and not primary_key,
    )


def _int(name: str, *, nullable: bool = False, primary_key: bool = False) -> sa.Column[int]:
    return sa.Column(
        name, sa.Integer, nullable=nullable, primary_key=primary_key, autoincrement=False
    )


def _text(
    name: str, length: int = 80, *, nullable: bool = False, primary_key: bool = False
) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=nullable, primary_key=primary_key)


def _when(name: str, *, primary_key: bool = False) -> sa.Column[datetime.datetime]:
    return sa.Column(name, sa.DateTime, nullable=False, primary_key=primary_key)


def _day(name: str = "day", *, primary_key: bool = False) -> sa.Column[datetime.date]:
    return sa.Column(name, sa.Date, nullable=False, primary_key=primary_key)


# --- the services -------------------------------------------------------------------


def _orders(md: sa.MetaData) -> None:
    sa.Table(
        "customers",
        md,
        _id(),
        _tenant(),
        _text("name"),
        _text("email", nullable=True),
        _text("phone", 30, nullable=True),
        _when("created_at"),
    )
    sa.Table(
        "customer_addresses",
        md,
        _id(),
        _ref("customer_id", "customers.id"),
        _text("label", 20),
        _text("line1"),
        _text("city", 40),
        _text("postcode", 12),
    )
    sa.Table(
        "loyalty_cards",
        md,
        _id(),
        _ref("customer_id", "customers.id", ondelete=CASCADE),
        _text("number", 20),
        _int("points"),
    )
    sa.Table(
        "orders",
        md,
        _id(),
        _tenant(),
        _ref("customer_id", "customers.id"),
        # An order keeps its history when an address is removed from the address book.
        _ref("address_id", "customer_addresses.id", nullable=True, ondelete=SET_NULL),
        _when("placed_at"),
        _text("status", 20),
        _int("total_cents"),
    )
    sa.Table(
        "order_items",
        md,
        _id(),
        _ref("order_id", "orders.id"),
        _int("product_ref"),
        _int("quantity"),
        _int("unit_price_cents"),
    )
    sa.Table(
        "order_status_history",
        md,
        _id(),
        _ref("order_id", "orders.id", ondelete=CASCADE),
        _text("status", 20),
        _when("changed_at"),
    )


def _inventory(md: sa.MetaData) -> None:
    sa.Table(
        "categories",
        md,
        _id(),
        _tenant(),
        _ref("parent_id", "categories.id", nullable=True),
        _text("name", 40),
    )
    sa.Table(
        "products",
        md,
        _id(),
        _tenant(),
        _ref("category_id", "categories.id"),
        _text("sku", 20),
        _text("name"),
        _text("unit", 10),
        _int("price_cents"),
    )
    sa.Table(
        "stock_locations",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
        _text("kind", 20),
    )
    sa.Table(
        "stock_levels",
        md,
        _ref("product_id", "products.id", primary_key=True),
        _ref("location_id", "stock_locations.id", primary_key=True),
        _int("quantity"),
        _when("updated_at"),
        sa.Index("ix_stock_levels_location_id", "location_id"),
    )
    sa.Table(
        "stock_movements",
        md,
        _id(),
        _ref("product_id", "products.id"),
        _ref("location_id", "stock_locations.id"),
        _int("delta"),
        _text("reason", 20),
        _when("moved_at"),
    )
    sa.Table(
        "reorder_rules",
        md,
        _id(),
        _ref("product_id", "products.id", ondelete=CASCADE),
        _int("min_quantity"),
        _int("reorder_quantity"),
    )


def _recipes(md: sa.MetaData) -> None:
    sa.Table(
        "recipes",
        md,
        _id(),
        _tenant(),
        _text("name"),
        _text("category", 20),
        _int("yield_units"),
    )
    sa.Table(
        "ingredients",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
        _text("unit", 10),
        _text("allergen", 20, nullable=True),
    )
    sa.Table(
        "recipe_ingredients",
        md,
        _ref("recipe_id", "recipes.id", primary_key=True),
        _ref("ingredient_id", "ingredients.id", primary_key=True),
        _int("quantity_g"),
        sa.Index("ix_recipe_ingredients_ingredient_id", "ingredient_id"),
    )
    # Sub-recipes: a croissant dough is a component of a pain au chocolat.
    sa.Table(
        "recipe_components",
        md,
        _ref("parent_recipe_id", "recipes.id", primary_key=True),
        _ref("child_recipe_id", "recipes.id", primary_key=True),
        _int("quantity"),
        sa.Index("ix_recipe_components_child_recipe_id", "child_recipe_id"),
    )
    sa.Table(
        "recipe_steps",
        md,
        _id(),
        _ref("recipe_id", "recipes.id", ondelete=CASCADE),
        _int("position"),
        _text("instruction", 200),
    )


def _sales(md: sa.MetaData) -> None:
    sa.Table(
        "receipts",
        md,
        _id(),
        _tenant(),
        _int("store_ref"),
        _when("sold_at"),
        _int("total_cents"),
    )
    sa.Table(
        "receipt_lines",
        md,
        _ref("receipt_id", "receipts.id", primary_key=True),
        _int("line_no", primary_key=True),
        _int("product_ref"),
        _int("quantity"),
        _int("amount_cents"),
    )
    sa.Table(
        "payments",
        md,
        _id(),
        _ref("receipt_id", "receipts.id", ondelete=CASCADE),
        _text("method", 12),
        _int("amount_cents"),
    )
    sa.Table(
        "refunds",
        md,
        _id(),
        _ref("receipt_id", "receipts.id"),
        _ref("payment_id", "payments.id", nullable=True, ondelete=SET_NULL),
        _int("amount_cents"),
        _text("reason", 40),
    )
    sa.Table(
        "daily_totals",
        md,
        _tenant(primary_key=True),
        _int("store_ref", primary_key=True),
        _day(primary_key=True),
        _int("receipts"),
        _int("revenue_cents"),
    )


def _production(md: sa.MetaData) -> None:
    sa.Table(
        "ovens",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
        _int("capacity_trays"),
    )
    sa.Table(
        "production_plans",
        md,
        _id(),
        _tenant(),
        _day(),
        _text("status", 20),
    )
    sa.Table(
        "production_batches",
        md,
        _id(),
        _ref("plan_id", "production_plans.id"),
        # A batch's record outlives the oven it was baked in.
        _ref("oven_id", "ovens.id", nullable=True, ondelete=SET_NULL),
        _int("recipe_ref"),
        _int("quantity"),
        _when("started_at"),
    )
    sa.Table(
        "batch_inputs",
        md,
        _ref("batch_id", "production_batches.id", ondelete=CASCADE, primary_key=True),
        _int("ingredient_ref", primary_key=True),
        _int("quantity_g"),
    )
    sa.Table(
        "quality_checks",
        md,
        _id(),
        _ref("batch_id", "production_batches.id"),
        sa.Column("passed", sa.Boolean, nullable=False),
        _text("note", nullable=True),
        _when("checked_at"),
    )


def _suppliers(md: sa.MetaData) -> None:
    # Suppliers are shared: one mill delivers to many bakeries, so no tenant_id here.
    sa.Table(
        "suppliers",
        md,
        _id(),
        _text("name"),
        _text("country", 2),
    )
    sa.Table(
        "supplier_contacts",
        md,
        _id(),
        _ref("supplier_id", "suppliers.id"),
        _text("name"),
        _text("email", nullable=True),
    )
    sa.Table(
        "tenant_suppliers",
        md,
        _tenant(primary_key=True),
        _ref("supplier_id", "suppliers.id", primary_key=True),
        _day("since"),
        sa.Index("ix_tenant_suppliers_supplier_id", "supplier_id"),
    )
    sa.Table(
        "purchase_orders",
        md,
        _id(),
        _tenant(),
        _ref("supplier_id", "suppliers.id"),
        _when("ordered_at"),
        _text("status", 20),
    )
    sa.Table(
        "purchase_order_lines",
        md,
        _id(),
        _ref("purchase_order_id", "purchase_orders.id"),
        _int("ingredient_ref"),
        _int("quantity"),
        _int("price_cents"),
    )


def _pos(md: sa.MetaData) -> None:
    sa.Table(
        "stores",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
        _text("city", 40),
        # Half of the stores/employees cycle; created after both tables (use_alter),
        # named so that PostgreSQL and MySQL can drop it again.
        sa.Column(
            "manager_id",
            sa.Integer,
            sa.ForeignKey("employees.id", use_alter=True, name="fk_stores_manager_id"),
            nullable=True,
            index=True,
        ),
    )
    sa.Table(
        "employees",
        md,
        _id(),
        _ref("store_id", "stores.id"),
        _text("name"),
        _text("role", 20),
        _day("hired_on"),
    )
    sa.Table(
        "registers",
        md,
        _id(),
        _ref("store_id", "stores.id"),
        _text("label", 20),
    )
    sa.Table(
        "shifts",
        md,
        _id(),
        _ref("employee_id", "employees.id"),
        _ref("register_id", "registers.id", nullable=True, ondelete=SET_NULL),
        _when("starts_at"),
        _when("ends_at"),
    )
    sa.Table(
        "cash_counts",
        md,
        _id(),
        _ref("register_id", "registers.id", ondelete=CASCADE),
        _when("counted_at"),
        _int("amount_cents"),
    )


def _external(md: sa.MetaData) -> None:
    # Public weather data, shared by every tenant and kept by every erasure.
    sa.Table(
        "weather_stations",
        md,
        _id(),
        _text("name", 40),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
    )
    sa.Table(
        "weather_observations",
        md,
        _ref("station_id", "weather_stations.id", primary_key=True),
        _when("observed_at", primary_key=True),
        sa.Column("temperature_c", sa.Float, nullable=False),
        sa.Column("precipitation_mm", sa.Float, nullable=False),
    )
    sa.Table(
        "weather_subscriptions",
        md,
        _id(),
        _tenant(),
        _ref("station_id", "weather_stations.id"),
        _int("store_ref"),
        _when("created_at"),
    )
    sa.Table(
        "integrations",
        md,
        _id(),
        _tenant(),
        _text("provider", 20),
        _text("account_ref", 40),
    )
    sa.Table(
        "sync_runs",
        md,
        _id(),
        _ref("integration_id", "integrations.id", ondelete=CASCADE),
        _when("started_at"),
        _text("status", 12),
        _int("records"),
    )


def _forecasting(md: sa.MetaData) -> None:
    sa.Table(
        "forecast_models",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
        _text("algorithm", 20),
        _when("trained_at"),
    )
    sa.Table(
        "model_features",
        md,
        _ref("model_id", "forecast_models.id", ondelete=CASCADE, primary_key=True),
        _text("feature", 40, primary_key=True),
        sa.Column("weight", sa.Float, nullable=False),
    )
    sa.Table(
        "forecasts",
        md,
        _tenant(primary_key=True),
        _int("product_ref", primary_key=True),
        _day(primary_key=True),
        _ref("model_id", "forecast_models.id"),
        _int("quantity"),
    )
    sa.Table(
        "forecast_points",
        md,
        _tenant(primary_key=True),
        _int("product_ref", primary_key=True),
        _day(primary_key=True),
        _int("hour", primary_key=True),
        _int("quantity"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "product_ref", "day"],
            ["forecasts.tenant_id", "forecasts.product_ref", "forecasts.day"],
            ondelete=CASCADE,
        ),
    )
    sa.Table(
        "forecast_adjustments",
        md,
        _id(),
        sa.Column("tenant_id", sa.Integer, nullable=False),
        _int("product_ref"),
        _day(),
        _int("delta"),
        _text("reason", 40),
        sa.ForeignKeyConstraint(
            ["tenant_id", "product_ref", "day"],
            ["forecasts.tenant_id", "forecasts.product_ref", "forecasts.day"],
        ),
        sa.Index("ix_forecast_adjustments_forecast", "tenant_id", "product_ref", "day"),
    )


def _training(md: sa.MetaData) -> None:
    sa.Table(
        "courses",
        md,
        _id(),
        _tenant(),
        _text("title"),
        _text("level", 12),
    )
    sa.Table(
        "lessons",
        md,
        _id(),
        _ref("course_id", "courses.id", ondelete=CASCADE),
        _int("position"),
        _text("title"),
    )
    sa.Table(
        "trainees",
        md,
        _id(),
        _tenant(),
        _text("name"),
        _text("email", nullable=True),
    )
    sa.Table(
        "enrollments",
        md,
        _ref("trainee_id", "trainees.id", primary_key=True),
        _ref("course_id", "courses.id", primary_key=True),
        _when("enrolled_at"),
        sa.Index("ix_enrollments_course_id", "course_id"),
    )
    sa.Table(
        "lesson_progress",
        md,
        _int("trainee_id", primary_key=True),
        _int("course_id", primary_key=True),
        _ref("lesson_id", "lessons.id", primary_key=True),
        _when("completed_at"),
        _int("score"),
        sa.ForeignKeyConstraint(
            ["trainee_id", "course_id"],
            ["enrollments.trainee_id", "enrollments.course_id"],
            ondelete=CASCADE,
        ),
        sa.Index("ix_lesson_progress_lesson_id", "lesson_id"),
    )


def _alerts(md: sa.MetaData) -> None:
    sa.Table(
        "escalation_policies",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
    )
    sa.Table(
        "escalation_steps",
        md,
        _ref("policy_id", "escalation_policies.id", ondelete=CASCADE, primary_key=True),
        _int("position", primary_key=True),
        _int("wait_minutes"),
        _text("channel", 12),
    )
    sa.Table(
        "alert_rules",
        md,
        _id(),
        _tenant(),
        _ref("escalation_policy_id", "escalation_policies.id", nullable=True, ondelete=SET_NULL),
        _text("name", 40),
        _text("metric", 40),
        _int("threshold"),
    )
    sa.Table(
        "alerts",
        md,
        _id(),
        _tenant(),
        # An alert stays in the history when its rule is deleted.
        _ref("rule_id", "alert_rules.id", nullable=True, ondelete=SET_NULL),
        _when("raised_at"),
        _text("severity", 10),
        _text("message", 120),
    )
    sa.Table(
        "alert_acknowledgements",
        md,
        _id(),
        _ref("alert_id", "alerts.id", ondelete=CASCADE),
        _text("acknowledged_by", 40),
        _when("acknowledged_at"),
    )


def _notifications(md: sa.MetaData) -> None:
    sa.Table(
        "channels",
        md,
        _id(),
        _tenant(),
        _text("kind", 10),
        _text("address"),
    )
    sa.Table(
        "templates",
        md,
        _id(),
        _tenant(),
        _text("name", 40),
        _text("body", 200),
    )
    sa.Table(
        "messages",
        md,
        _id(),
        _tenant(),
        _ref("channel_id", "channels.id"),
        _ref("template_id", "templates.id", nullable=True, ondelete=SET_NULL),
        _text("subject", 120),
        _when("created_at"),
    )
    # An append-only log with no key at all: the engine addresses its rows physically.
    sa.Table(
        "delivery_log",
        md,
        _ref("message_id", "messages.id"),
        _int("attempt"),
        _text("status", 12),
        _when("logged_at"),
    )
    sa.Table(
        "preferences",
        md,
        _tenant(primary_key=True),
        _text("topic", 40, primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
    )


_BUILDERS: dict[str, Callable[[sa.MetaData], None]] = {
    "orders": _orders,
    "inventory": _inventory,
    "recipes": _recipes,
    "sales": _sales,
    "production": _production,
    "suppliers": _suppliers,
    "pos": _pos,
    "external": _external,
    "forecasting": _forecasting,
    "training": _training,
    "alerts": _alerts,
    "notifications": _notifications,
}
