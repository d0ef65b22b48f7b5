"""Create the bakery estate's databases, fill them with tenants, and fingerprint them.

``seed`` (re)creates every service's tables and fills ``tenants`` bakeries (tenant ids
``1..tenants``) with repeatable data: at scale 1.0 each tenant has roughly 400-1,400
rows per service, ids count up per table across tenants, and the shared tables
(suppliers, weather) are filled once. ``census`` reads everything back and says, row by row,
which tenant owns it, so a test can prove that an erasure removed exactly one
tenant's rows and left every other row byte-identical.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from examples.bakery.schema import SERVICES, metadata_for
from models.erasure import TableAction
from models.registry import Registry, load_registry
from worker.database import create_engine

#: The estate's registry file.
REGISTRY_PATH = Path(__file__).with_name("services.toml")

#: Rows per INSERT round trip (executemany).
CHUNK = 5000

_START = datetime.datetime(2024, 3, 4, 5, 0)
_SUBJECT_COLUMN = "tenant_id"

Row = dict[str, Any]
#: Rows scaled by the seed's ``scale``, at least one.
Scaled = Callable[[int], int]


def registry() -> Registry:
    """The estate's registry (``services.toml``)."""
    return load_registry(REGISTRY_PATH)


def sqlite_urls(directory: Path) -> dict[str, str]:
    """One SQLite database file per service in ``directory``."""
    return {service: f"sqlite:///{directory / f'{service}.db'}" for service in SERVICES}


def env_for(urls: Mapping[str, str]) -> dict[str, str]:
    """The environment a worker needs: each service's ``url_env`` variable -> its URL."""
    services = registry().services
    return {services[name].url_env: url for name, url in urls.items()}


def seed(
    urls: Mapping[str, str], tenants: int = 5, scale: float = 1.0, seed: int = 7
) -> dict[str, int]:
    """Drop and recreate each service's tables in ``urls`` and fill tenants ``1..tenants``.

    The same arguments always give the same rows. Returns the rows written per service.
    """
    tenant_ids = list(range(1, tenants + 1))

    def scaled(n: int) -> int:
        return max(1, round(n * scale))

    written: dict[str, int] = {}
    for service, url in urls.items():
        metadata = metadata_for(service)
        rows = _Rows(metadata)
        rnd = random.Random(f"{seed}/{service}")  # noqa: S311 - repeatable demo data, not secrets
        _GENERATORS[service](rows, rnd, tenant_ids, scaled)
        engine = create_engine(url)
        try:
            _recreate(engine, metadata)
            written[service] = _load(engine, metadata, rows)
        finally:
            engine.dispose()
    return written


# --- who owns what -------------------------------------------------------------------


@dataclass
class Census:
    """The estate read back, split between one tenant and everything else."""

    #: Service -> SHA-256 over every row that is not the tenant's, in a fixed order.
    fingerprints: dict[str, str]
    #: Service -> table -> rows the tenant owns (anonymized rows still count).
    tenant_rows: dict[str, dict[str, int]]

    @property
    def fingerprint(self) -> str:
        """One digest over every service's."""
        digest = hashlib.sha256()
        for service in sorted(self.fingerprints):
            digest.update(f"{service}={self.fingerprints[service]}\n".encode())
        return digest.hexdigest()


def census(urls: Mapping[str, str], tenant: int) -> Census:
    """Read every row of every service and attribute it to a tenant or to nobody.

    A row is a tenant's when its ``tenant_id`` says so; otherwise it is the owner of
    the first row it references (ON DELETE SET NULL references excepted: those rows
    outlive what they point at). A shared row of a ``delete_if_orphaned`` table is a
    tenant's when that tenant holds every link to it. Everything else (weather data,
    suppliers several tenants use) belongs to nobody and is in every fingerprint.
    """
    reg = registry()
    fingerprints: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    for service, url in urls.items():
        orphanable = {
            name
            for name, settings in reg.sql_service(service).tables.items()
            if settings.action is TableAction.DELETE_IF_ORPHANED
        }
        engine = create_engine(url)
        try:
            fingerprints[service], counts[service] = _census_one(
                engine, metadata_for(service), tenant, orphanable
            )
        finally:
            engine.dispose()
    return Census(fingerprints, counts)


def fingerprint_other_tenants(urls: Mapping[str, str], tenant: int) -> str:
    """SHA-256 over every row of the estate that does not belong to ``tenant``
    (other tenants' rows and shared rows): equal before and after erasing ``tenant``."""
    return census(urls, tenant).fingerprint


def _census_one(
    engine: sa.Engine, metadata: sa.MetaData, tenant: int, orphanable: set[str]
) -> tuple[str, dict[str, int]]:
    data: dict[str, list[Row]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key) or list(table.columns)
            data[table.name] = [
                dict(r._mapping) for r in conn.execute(sa.select(table).order_by(*order))
            ]

    def attribute(shared: Mapping[str, dict[tuple[Any, ...], int]]) -> dict[str, list[int | None]]:
        owners: dict[str, list[int | None]] = {}
        for table in metadata.sorted_tables:
            refs = [
                (fk, _index(fk, data, owners))
                for fk in sorted(table.foreign_key_constraints, key=_fk_key)
                if fk.ondelete != "SET NULL" and fk.referred_table.name != table.name
            ]
            pk = [c.name for c in table.primary_key]
            result: list[int | None] = []
            for row in data[table.name]:
                owner: int | None = row.get(_SUBJECT_COLUMN)
                if owner is None and table.name in shared:
                    owner = shared[table.name].get(tuple(row[c] for c in pk))
                for fk, index in refs:
                    if owner is not None:
                        break
                    owner = index.get(tuple(row[c] for c in fk.column_keys))
                result.append(owner)
            owners[table.name] = result
        return owners

    owners = attribute({})
    shared: dict[str, dict[tuple[Any, ...], int]] = {}
    for name in sorted(orphanable):
        shared[name] = _sole_linker(metadata, metadata.tables[name], data, owners)
    owners = attribute(shared)

    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for name in sorted(data):
        counts[name] = 0
        for row, owner in zip(data[name], owners[name], strict=True):
            if owner == tenant:
                counts[name] += 1
            else:
                digest.update(f"{name}: {tuple(row.values())!r}\n".encode())
    return digest.hexdigest(), counts


def _fk_key(fk: sa.ForeignKeyConstraint) -> tuple[str, ...]:
    return (fk.referred_table.name, *fk.column_keys)


def _index(
    fk: sa.ForeignKeyConstraint,
    data: Mapping[str, list[Row]],
    owners: Mapping[str, list[int | None]],
) -> dict[tuple[Any, ...], int]:
    """Referenced key -> owner, for the parent of ``fk``."""
    parent = fk.referred_table.name
    cols = [element.column.name for element in fk.elements]
    if parent not in owners:  # a use_alter reference to a table read later
        return {}
    return {
        tuple(row[c] for c in cols): owner
        for row, owner in zip(data[parent], owners[parent], strict=True)
        if owner is not None
    }


def _sole_linker(
    metadata: sa.MetaData,
    shared: sa.Table,
    data: Mapping[str, list[Row]],
    owners: Mapping[str, list[int | None]],
) -> dict[tuple[Any, ...], int]:
    """Shared key -> the tenant when exactly one tenant's rows reference it."""
    linkers: dict[tuple[Any, ...], set[int]] = {}
    for table in metadata.sorted_tables:
        if _SUBJECT_COLUMN not in table.c:
            continue  # rows owned by the shared row, not links to it
        for fk in table.foreign_key_constraints:
            if fk.referred_table is not shared:
                continue
            for row, owner in zip(data[table.name], owners[table.name], strict=True):
                key = tuple(row[c] for c in fk.column_keys)
                if owner is not None and None not in key:
                    linkers.setdefault(key, set()).add(owner)
    return {key: next(iter(who)) for key, who in linkers.items() if len(who) == 1}


# --- loading -------------------------------------------------------------------------


class _Rows:
    """The rows of one service database; ``id`` values count up per table."""

    def __init__(self, metadata: sa.MetaData) -> None:
        self.metadata = metadata
        self.by_table: dict[str, list[Row]] = {name: [] for name in metadata.tables}
        self._ids: dict[str, int] = dict.fromkeys(metadata.tables, 0)

    def add(self, table: str, **values: Any) -> int:
        """Append a row with the table's next ``id``; returns it."""
        self._ids[table] += 1
        self.by_table[table].append({"id": self._ids[table], **values})
        return self._ids[table]

    def put(self, table: str, **values: Any) -> None:
        """Append a row of a table keyed by its own columns."""
        self.by_table[table].append(values)

    def last(self, table: str) -> Row:
        return self.by_table[table][-1]


def _recreate(engine: sa.Engine, metadata: sa.MetaData) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # DROP TABLE deletes the rows first; the stores/employees cycle has no
            # order that satisfies immediate checks.
            conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        metadata.drop_all(conn)
        metadata.create_all(conn)


def _load(engine: sa.Engine, metadata: sa.MetaData, rows: _Rows) -> int:
    """Insert parents first; use_alter references (the cycle) are set by a later UPDATE."""
    total = 0
    late: list[tuple[sa.Table, list[str], list[Row]]] = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            data = rows.by_table[table.name]
            total += len(data)
            cols = [
                c for fk in table.foreign_key_constraints if fk.use_alter for c in fk.column_keys
            ]
            if cols:
                late.append((table, cols, [r for r in data if any(r[c] is not None for c in cols)]))
                data = [{**r, **dict.fromkeys(cols)} for r in data]
            for chunk in _chunks(data):
                conn.execute(sa.insert(table), chunk)
        for table, cols, updates in late:
            pk = [c.name for c in table.primary_key]
            stmt = (
                sa.update(table)
                .where(*[table.c[c] == sa.bindparam(f"key_{c}") for c in pk])
                .values({c: sa.bindparam(f"new_{c}") for c in cols})
            )
            params = [
                {**{f"key_{c}": r[c] for c in pk}, **{f"new_{c}": r[c] for c in cols}}
                for r in updates
            ]
            for chunk in _chunks(params):
                conn.execute(stmt, chunk)
    return total


def _chunks(rows: Sequence[Row]) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


# --- the data ------------------------------------------------------------------------

_FIRST = ("Ana", "Ben", "Chloe", "David", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas")
_LAST = ("Martin", "Bernard", "Dubois", "Keller", "Rossi", "Novak", "Silva", "Meyer", "Costa")
_STREETS = ("Rue du Four", "Mill Lane", "Bakerstraat", "Via del Pane", "Kornweg", "High St")
_CITIES = ("Lyon", "Leeds", "Utrecht", "Bologna", "Graz", "Porto")
_PRODUCTS = ("Baguette", "Croissant", "Sourdough", "Brioche", "Rye loaf", "Eclair", "Tart")
_INGREDIENTS = ("flour T65", "rye flour", "butter", "sugar", "salt", "yeast", "eggs", "milk")
_ALLERGENS = ("gluten", "milk", "eggs", "nuts", "sesame")
_ROOT_CATEGORIES = ("Breads", "Viennoiserie", "Patisserie")


def _at(rnd: random.Random, days: int = 90) -> datetime.datetime:
    """A whole-second time in the estate's quarter (MySQL keeps no microseconds)."""
    return _START + datetime.timedelta(minutes=rnd.randrange(days * 24 * 60))


def _day(offset: int) -> datetime.date:
    return _START.date() + datetime.timedelta(days=offset)


def _person(rnd: random.Random) -> tuple[str, str]:
    first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
    return f"{first} {last}", f"{first}.{last}{rnd.randrange(1000)}@example.test".lower()


def _orders(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    path = ("placed", "baking", "ready", "collected")
    for tenant in tenants:
        for _ in range(n(50)):
            name, email = _person(rnd)
            customer = rows.add(
                "customers",
                tenant_id=tenant,
                name=name,
                email=email,
                phone=f"+33 6 {rnd.randrange(10**8):08d}" if rnd.random() < 0.7 else None,
                created_at=_at(rnd),
            )
            addresses = [
                rows.add(
                    "customer_addresses",
                    customer_id=customer,
                    label=rnd.choice(("home", "work", "shop")),
                    line1=f"{rnd.randint(1, 200)} {rnd.choice(_STREETS)}",
                    city=rnd.choice(_CITIES),
                    postcode=f"{rnd.randrange(10**5):05d}",
                )
                for _ in range(rnd.choice((0, 1, 1, 2, 2, 3)))
            ]
            if rnd.random() < 0.6:
                rows.add(
                    "loyalty_cards",
                    customer_id=customer,
                    number=f"LC{tenant:03d}-{customer:06d}",
                    points=rnd.randrange(500),
                )
            for _ in range(rnd.randint(1, 5)):
                placed = _at(rnd)
                items = [
                    (rnd.randrange(1, 200), rnd.randint(1, 12), rnd.randrange(90, 4500))
                    for _ in range(rnd.randint(1, 4))
                ]
                steps = path[: rnd.randint(1, len(path))]
                address = rnd.choice(addresses) if addresses and rnd.random() < 0.8 else None
                order = rows.add(
                    "orders",
                    tenant_id=tenant,
                    customer_id=customer,
                    address_id=address,
                    placed_at=placed,
                    status=steps[-1],
                    total_cents=sum(q * p for _, q, p in items),
                )
                for product, quantity, price in items:
                    rows.add(
                        "order_items",
                        order_id=order,
                        product_ref=product,
                        quantity=quantity,
                        unit_price_cents=price,
                    )
                for k, status in enumerate(steps):
                    rows.add(
                        "order_status_history",
                        order_id=order,
                        status=status,
                        changed_at=placed + datetime.timedelta(minutes=40 * k),
                    )


def _category_tree(rows: _Rows, rnd: random.Random, tenant: int) -> list[int]:
    """Three root categories, every branch five levels deep, some nodes forking."""
    nodes: list[int] = []

    def grow(parent: int | None, name: str, depth: int) -> None:
        node = rows.add("categories", tenant_id=tenant, parent_id=parent, name=name)
        nodes.append(node)
        if depth < 5:
            for k in range(1 + (rnd.random() < 0.35)):
                grow(node, f"{name[:30]}/{depth + 1}.{k}", depth + 1)

    for root in _ROOT_CATEGORIES:
        grow(None, root, 1)
    return nodes


def _inventory(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        categories = _category_tree(rows, rnd, tenant)
        locations = [
            rows.add("stock_locations", tenant_id=tenant, name=name, kind=kind)
            for name, kind in (("shop", "sales"), ("bakehouse", "store"), ("cold room", "cold"))
        ]
        products = []
        for k in range(n(120)):
            product = rows.add(
                "products",
                tenant_id=tenant,
                category_id=rnd.choice(categories),
                sku=f"T{tenant}-{k:05d}",
                name=f"{rnd.choice(_PRODUCTS)} no. {k}",
                unit=rnd.choice(("piece", "kg", "box")),
                price_cents=rnd.randrange(80, 3500),
            )
            products.append(product)
            for location in rnd.sample(locations, rnd.randint(1, 3)):
                rows.put(
                    "stock_levels",
                    product_id=product,
                    location_id=location,
                    quantity=rnd.randrange(200),
                    updated_at=_at(rnd),
                )
            if rnd.random() < 0.5:
                rows.add(
                    "reorder_rules",
                    product_id=product,
                    min_quantity=rnd.randrange(5, 20),
                    reorder_quantity=rnd.randrange(20, 100),
                )
        for _ in range(n(400)):
            rows.add(
                "stock_movements",
                product_id=rnd.choice(products),
                location_id=rnd.choice(locations),
                delta=rnd.randint(-40, 60),
                reason=rnd.choice(("sale", "delivery", "waste", "count")),
                moved_at=_at(rnd),
            )


def _recipes(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        ingredients = [
            rows.add(
                "ingredients",
                tenant_id=tenant,
                name=f"{rnd.choice(_INGREDIENTS)} #{k}",
                unit=rnd.choice(("g", "ml", "piece")),
                allergen=rnd.choice(_ALLERGENS) if rnd.random() < 0.3 else None,
            )
            for k in range(n(50))
        ]
        recipes: list[int] = []
        for k in range(n(60)):
            recipe = rows.add(
                "recipes",
                tenant_id=tenant,
                name=f"{rnd.choice(_PRODUCTS)} v{k}",
                category=rnd.choice(("bread", "pastry", "dough", "filling")),
                yield_units=rnd.randint(1, 60),
            )
            for ingredient in rnd.sample(ingredients, min(len(ingredients), rnd.randint(3, 7))):
                rows.put(
                    "recipe_ingredients",
                    recipe_id=recipe,
                    ingredient_id=ingredient,
                    quantity_g=rnd.randrange(1, 1000),
                )
            # Sub-recipes are earlier recipes, so the components form a tree (a DAG).
            if len(recipes) >= 5 and rnd.random() < 0.5:
                for child in rnd.sample(recipes, rnd.randint(1, 2)):
                    rows.put(
                        "recipe_components",
                        parent_recipe_id=recipe,
                        child_recipe_id=child,
                        quantity=rnd.randint(1, 4),
                    )
            for position in range(1, rnd.randint(3, 7) + 1):
                rows.add(
                    "recipe_steps",
                    recipe_id=recipe,
                    position=position,
                    instruction=f"step {position}: {rnd.choice(('mix', 'proof', 'shape', 'bake'))}",
                )
            recipes.append(recipe)


def _sales(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        stores = [tenant * 10 + k for k in (1, 2)]
        for _ in range(n(200)):
            lines = [
                (rnd.randrange(1, 200), rnd.randint(1, 6), rnd.randrange(90, 2000))
                for _ in range(rnd.randint(1, 4))
            ]
            total = sum(q * p for _, q, p in lines)
            receipt = rows.add(
                "receipts",
                tenant_id=tenant,
                store_ref=rnd.choice(stores),
                sold_at=_at(rnd),
                total_cents=total,
            )
            for line_no, (product, quantity, price) in enumerate(lines, 1):
                rows.put(
                    "receipt_lines",
                    receipt_id=receipt,
                    line_no=line_no,
                    product_ref=product,
                    quantity=quantity,
                    amount_cents=quantity * price,
                )
            split = rnd.random() < 0.1
            parts = [total // 2, total - total // 2] if split else [total]
            payments = [
                rows.add(
                    "payments",
                    receipt_id=receipt,
                    method=rnd.choice(("card", "cash", "voucher")),
                    amount_cents=amount,
                )
                for amount in parts
            ]
            if rnd.random() < 0.05:
                rows.add(
                    "refunds",
                    receipt_id=receipt,
                    payment_id=rnd.choice(payments) if rnd.random() < 0.8 else None,
                    amount_cents=rnd.randrange(1, total + 1),
                    reason=rnd.choice(("burnt", "wrong order", "goodwill")),
                )
        for store in stores:
            for offset in range(n(60)):
                rows.put(
                    "daily_totals",
                    tenant_id=tenant,
                    store_ref=store,
                    day=_day(offset),
                    receipts=rnd.randrange(40, 400),
                    revenue_cents=rnd.randrange(20_000, 300_000),
                )


def _production(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        ovens = [
            rows.add("ovens", tenant_id=tenant, name=f"deck oven {k}", capacity_trays=8 + 4 * k)
            for k in range(1, 5)
        ]
        for offset in range(n(60)):
            plan = rows.add(
                "production_plans",
                tenant_id=tenant,
                day=_day(offset),
                status=rnd.choice(("draft", "final", "done")),
            )
            for _ in range(rnd.randint(2, 6)):
                batch = rows.add(
                    "production_batches",
                    plan_id=plan,
                    oven_id=rnd.choice(ovens) if rnd.random() < 0.9 else None,
                    recipe_ref=rnd.randrange(1, 300),
                    quantity=rnd.randint(10, 200),
                    started_at=datetime.datetime.combine(_day(offset), datetime.time(3))
                    + datetime.timedelta(minutes=rnd.randrange(600)),
                )
                for ingredient in rnd.sample(range(1, 40), rnd.randint(2, 4)):
                    rows.put(
                        "batch_inputs",
                        batch_id=batch,
                        ingredient_ref=ingredient,
                        quantity_g=rnd.randrange(100, 20_000),
                    )
                if rnd.random() < 0.5:
                    passed = rnd.random() < 0.9
                    rows.add(
                        "quality_checks",
                        batch_id=batch,
                        passed=passed,
                        note=None if passed else "underproofed",
                        checked_at=_at(rnd),
                    )


def _suppliers(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    def supplier(name: str) -> int:
        sid = rows.add("suppliers", name=name, country=rnd.choice(("FR", "DE", "IT", "NL")))
        for _ in range(rnd.randint(1, 2)):
            person, email = _person(rnd)
            rows.add("supplier_contacts", supplier_id=sid, name=person, email=email)
        return sid

    pool = [supplier(f"Moulin {k}") for k in range(max(8, 3 * len(tenants)))]
    for k in range(3):  # suppliers nobody is linked to: every erasure keeps them
        supplier(f"Dormant {k}")
    for tenant in tenants:
        own = [supplier(f"Local farm {tenant}.{k}") for k in range(2)]
        linked = own + rnd.sample(pool, 5)
        for sid in sorted(linked):
            rows.put(
                "tenant_suppliers",
                tenant_id=tenant,
                supplier_id=sid,
                since=_day(-rnd.randrange(900)),
            )
        for _ in range(n(80)):
            po = rows.add(
                "purchase_orders",
                tenant_id=tenant,
                supplier_id=rnd.choice(linked),
                ordered_at=_at(rnd),
                status=rnd.choice(("sent", "confirmed", "delivered")),
            )
            for _ in range(rnd.randint(2, 6)):
                rows.add(
                    "purchase_order_lines",
                    purchase_order_id=po,
                    ingredient_ref=rnd.randrange(1, 60),
                    quantity=rnd.randint(1, 50),
                    price_cents=rnd.randrange(100, 9000),
                )


def _pos(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        employees: list[int] = []
        registers: list[int] = []
        for k in range(3):
            store = rows.add(
                "stores",
                tenant_id=tenant,
                name=f"Bakery {tenant}.{k}",
                city=rnd.choice(_CITIES),
                manager_id=None,
            )
            staff = [
                rows.add(
                    "employees",
                    store_id=store,
                    name=_person(rnd)[0],
                    role="manager" if j == 0 else rnd.choice(("baker", "seller")),
                    hired_on=_day(-rnd.randrange(2000)),
                )
                for j in range(8)
            ]
            rows.last("stores")["manager_id"] = staff[0]
            employees += staff
            registers += [
                rows.add("registers", store_id=store, label=f"till {j}") for j in range(1, 4)
            ]
        for _ in range(n(360)):
            start = _at(rnd)
            rows.add(
                "shifts",
                employee_id=rnd.choice(employees),
                register_id=rnd.choice(registers) if rnd.random() < 0.85 else None,
                starts_at=start,
                ends_at=start + datetime.timedelta(hours=rnd.choice((4, 6, 8))),
            )
        for register in registers:
            for _ in range(n(30)):
                rows.add(
                    "cash_counts",
                    register_id=register,
                    counted_at=_at(rnd),
                    amount_cents=rnd.randrange(5_000, 150_000),
                )


def _external(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    stations = []
    for k in range(12):
        station = rows.add(
            "weather_stations",
            name=f"{_CITIES[k % len(_CITIES)]} {k}",
            latitude=round(rnd.uniform(38, 55), 3),
            longitude=round(rnd.uniform(-8, 16), 3),
        )
        stations.append(station)
        for hour in range(n(120)):
            rows.put(
                "weather_observations",
                station_id=station,
                observed_at=_START + datetime.timedelta(hours=2 * hour),
                temperature_c=round(rnd.uniform(-5, 30), 1),
                precipitation_mm=round(max(0.0, rnd.gauss(0, 2)), 1),
            )
    for tenant in tenants:
        for station in rnd.sample(stations, 3):
            rows.add(
                "weather_subscriptions",
                tenant_id=tenant,
                station_id=station,
                store_ref=tenant * 10 + rnd.randint(1, 3),
                created_at=_at(rnd),
            )
        for provider in ("deliveroo", "ubereats", "quickbooks", "shopify"):
            integration = rows.add(
                "integrations",
                tenant_id=tenant,
                provider=provider,
                account_ref=f"{provider}-{rnd.randrange(10**6):06d}",
            )
            for _ in range(n(80)):
                rows.add(
                    "sync_runs",
                    integration_id=integration,
                    started_at=_at(rnd),
                    status=rnd.choice(("ok", "ok", "ok", "failed")),
                    records=rnd.randrange(500),
                )


def _forecasting(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    features = ("weekday", "holiday", "temperature", "rain", "promo", "lag7", "lag1", "season")
    for tenant in tenants:
        models = []
        for algorithm in ("ets", "prophet", "gbm", "naive"):
            model = rows.add(
                "forecast_models",
                tenant_id=tenant,
                name=f"{algorithm} daily",
                algorithm=algorithm,
                trained_at=_at(rnd),
            )
            models.append(model)
            for feature in features:
                rows.put(
                    "model_features",
                    model_id=model,
                    feature=feature,
                    weight=round(rnd.uniform(-1, 1), 4),
                )
        keys = []
        for product in range(1, n(20) + 1):
            for offset in range(n(14)):
                day = _day(90 + offset)
                keys.append((product, day))
                rows.put(
                    "forecasts",
                    tenant_id=tenant,
                    product_ref=product,
                    day=day,
                    model_id=rnd.choice(models),
                    quantity=rnd.randrange(10, 300),
                )
                for hour in (7, 12, 17):
                    rows.put(
                        "forecast_points",
                        tenant_id=tenant,
                        product_ref=product,
                        day=day,
                        hour=hour,
                        quantity=rnd.randrange(0, 120),
                    )
        for _ in range(n(30)):
            product, day = rnd.choice(keys)
            rows.add(
                "forecast_adjustments",
                tenant_id=tenant,
                product_ref=product,
                day=day,
                delta=rnd.randint(-30, 30),
                reason=rnd.choice(("market day", "road works", "school holiday")),
            )


def _training(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        lessons: dict[int, list[int]] = {}
        for k in range(n(8)):
            course = rows.add(
                "courses",
                tenant_id=tenant,
                title=f"{rnd.choice(_PRODUCTS)} masterclass {k}",
                level=rnd.choice(("basic", "advanced")),
            )
            lessons[course] = [
                rows.add("lessons", course_id=course, position=p, title=f"lesson {p}")
                for p in range(1, rnd.randint(4, 8) + 1)
            ]
        for _ in range(n(25)):
            name, email = _person(rnd)
            trainee = rows.add("trainees", tenant_id=tenant, name=name, email=email)
            for course in rnd.sample(sorted(lessons), min(3, len(lessons))):
                enrolled = _at(rnd, 30)
                rows.put("enrollments", trainee_id=trainee, course_id=course, enrolled_at=enrolled)
                done = lessons[course][: rnd.randint(0, len(lessons[course]))]
                for k, lesson in enumerate(done, 1):
                    rows.put(
                        "lesson_progress",
                        trainee_id=trainee,
                        course_id=course,
                        lesson_id=lesson,
                        completed_at=enrolled + datetime.timedelta(days=k),
                        score=rnd.randrange(40, 101),
                    )


def _alerts(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    for tenant in tenants:
        policies = []
        for name in ("day shift", "night bake", "weekend"):
            policy = rows.add("escalation_policies", tenant_id=tenant, name=name)
            policies.append(policy)
            for position in range(1, 4):
                rows.put(
                    "escalation_steps",
                    policy_id=policy,
                    position=position,
                    wait_minutes=15 * position,
                    channel=rnd.choice(("sms", "email", "push")),
                )
        rules = [
            rows.add(
                "alert_rules",
                tenant_id=tenant,
                escalation_policy_id=rnd.choice(policies) if rnd.random() < 0.8 else None,
                name=f"rule {k}",
                metric=rnd.choice(("oven_temp", "stock_low", "fridge_temp", "sales_drop")),
                threshold=rnd.randrange(1, 300),
            )
            for k in range(n(20))
        ]
        for _ in range(n(300)):
            raised = _at(rnd)
            alert = rows.add(
                "alerts",
                tenant_id=tenant,
                rule_id=rnd.choice(rules) if rnd.random() < 0.95 else None,
                raised_at=raised,
                severity=rnd.choice(("info", "warning", "critical")),
                message=f"threshold crossed at {raised:%H:%M}",
            )
            if rnd.random() < 0.65:
                rows.add(
                    "alert_acknowledgements",
                    alert_id=alert,
                    acknowledged_by=_person(rnd)[0],
                    acknowledged_at=raised + datetime.timedelta(minutes=rnd.randrange(1, 90)),
                )


def _notifications(rows: _Rows, rnd: random.Random, tenants: Sequence[int], n: Scaled) -> None:
    topics = ("orders", "stock", "alerts", "payroll", "weather", "suppliers", "news", "training")
    for tenant in tenants:
        channels = [
            rows.add(
                "channels",
                tenant_id=tenant,
                kind=kind,
                address=f"{kind}-{tenant}-{k}@example.test",
            )
            for kind in ("email", "sms", "push")
            for k in range(2)
        ]
        templates = [
            rows.add("templates", tenant_id=tenant, name=f"template {k}", body="Hello {name}")
            for k in range(12)
        ]
        for topic in topics:
            rows.put("preferences", tenant_id=tenant, topic=topic, enabled=rnd.random() < 0.7)
        for _ in range(n(300)):
            created = _at(rnd)
            message = rows.add(
                "messages",
                tenant_id=tenant,
                channel_id=rnd.choice(channels),
                template_id=rnd.choice(templates) if rnd.random() < 0.8 else None,
                subject=rnd.choice(("Your order is ready", "Stock low", "Weekly summary")),
                created_at=created,
            )
            for attempt in range(1, rnd.randint(1, 2) + 1):
                rows.put(
                    "delivery_log",
                    message_id=message,
                    attempt=attempt,
                    status="delivered" if rnd.random() < 0.9 else "bounced",
                    logged_at=created + datetime.timedelta(seconds=30 * attempt),
                )


_GENERATORS: dict[str, Callable[[_Rows, random.Random, Sequence[int], Scaled], None]] = {
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
