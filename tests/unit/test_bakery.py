"""The bakery estate (examples/bakery) on SQLite: its registry, schema and seed, and
the engine erasing one tenant from each of its twelve databases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from examples.bakery.schema import SERVICES, metadata_for
from examples.bakery.seed import census, env_for, registry, seed, sqlite_urls
from examples.bakery.stores import STORE_SERVICES
from models.erasure import TableAction
from worker.database import create_engine
from worker.planning.model import CycleStrategy
from worker.service import plan_service, run_service

TENANT = 3

#: Cycles the planner must find, per service (none elsewhere).
CYCLES = {
    "inventory": {CycleStrategy.TREE},  # categories.parent_id
    "pos": {CycleStrategy.NULLIFY},  # stores.manager_id <-> employees.store_id
}


def count(url: str, table: str, where: sa.ColumnElement[bool] | None = None) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(sa.table(table))
            if where is not None:
                query = query.where(where)
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_the_registry_names_every_service_and_its_url_variable(tmp_path: Path) -> None:
    reg = registry()
    # twelve databases, then a Redis cache and an S3 bucket
    assert tuple(reg.services) == (*SERVICES, *STORE_SERVICES)
    assert reg.services_for("tenant") == sorted([*SERVICES, *STORE_SERVICES])
    assert [reg.services[s].kind for s in STORE_SERVICES] == ["redis", "s3"]
    env = env_for(sqlite_urls(tmp_path))
    assert env["BAKERY_ORDERS_DATABASE_URL"] == f"sqlite:///{tmp_path / 'orders.db'}"
    assert sorted(env) == sorted(f"BAKERY_{s.upper()}_DATABASE_URL" for s in SERVICES)


def test_the_schema_has_about_sixty_tables_with_the_hard_shapes() -> None:
    tables = {s: metadata_for(s).tables for s in SERVICES}
    assert 55 <= sum(len(t) for t in tables.values()) <= 65
    assert all(4 <= len(t) <= 6 for t in tables.values())
    fks = [fk for t in tables.values() for table in t.values() for fk in table.foreign_keys]
    assert {fk.ondelete for fk in fks} == {None, "CASCADE", "SET NULL"}
    categories = tables["inventory"]["categories"]
    assert categories.c.parent_id.references(categories.c.id)  # a tree
    stores, employees = tables["pos"]["stores"], tables["pos"]["employees"]
    assert stores.c.manager_id.references(employees.c.id)  # a cycle
    assert employees.c.store_id.references(stores.c.id)
    assert not employees.c.store_id.nullable
    assert not tables["notifications"]["delivery_log"].primary_key.columns  # no key at all
    points = tables["forecasting"]["forecast_points"]
    assert [len(fk.columns) for fk in points.foreign_key_constraints] == [3]
    assert "tenant_id" not in tables["suppliers"]["suppliers"].c  # shared rows
    assert "tenant_id" not in tables["external"]["weather_observations"].c


def test_seeding_is_deterministic_and_realistic_in_volume(tmp_path: Path) -> None:
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    first, second = sqlite_urls(tmp_path / "a"), sqlite_urls(tmp_path / "b")
    other = {"recipes": sqlite_urls(tmp_path / "c")["recipes"]}
    started = time.perf_counter()
    written = seed(first)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"seeding five tenants took {elapsed:.1f}s"
    assert seed(second) == written
    seed(other, seed=8)
    first_census = census(first, TENANT)
    assert census(second, TENANT) == first_census
    assert census(other, TENANT).fingerprints["recipes"] != first_census.fingerprints["recipes"]
    for service in SERVICES:
        assert 300 <= sum(first_census.tenant_rows[service].values()) <= 1500, service


@pytest.mark.parametrize("service", SERVICES)
def test_erasing_a_tenant_removes_its_rows_and_nothing_else(tmp_path: Path, service: str) -> None:
    urls = {service: sqlite_urls(tmp_path)[service]}
    seed(urls)
    reg = registry()
    settings = reg.services[service]
    columns = reg.subject_columns(service, "tenant")
    before = census(urls, TENANT)
    anonymized = {
        t: before.tenant_rows[service][t]
        for t, p in settings.tables.items()
        if p.action is TableAction.ANONYMIZE
    }
    owned = sum(before.tenant_rows[service].values())
    engine = create_engine(urls[service])
    try:
        plan = plan_service(engine, settings, columns)
        preview = run_service(engine, service, settings, "tenant", columns, str(TENANT), dry=True)
        report = run_service(engine, service, settings, "tenant", columns, str(TENANT), dry=False)
    finally:
        engine.dispose()
    after = census(urls, TENANT)

    assert {c.strategy for c in plan.cycles} == CYCLES.get(service, set())
    assert report.verified
    assert report.warnings == []  # every key and tenant_id is indexed
    assert report.total_rows == preview.total_rows == owned - sum(anonymized.values()) > 0
    assert after.fingerprints == before.fingerprints  # other tenants and shared rows
    assert {t: n for t, n in after.tenant_rows[service].items() if n} == {
        t: n for t, n in anonymized.items() if n
    }


def test_anonymized_customers_keep_their_row_but_not_who_they_are(tmp_path: Path) -> None:
    urls = {"orders": sqlite_urls(tmp_path)["orders"]}
    seed(urls)
    settings = registry().services["orders"]
    engine = create_engine(urls["orders"])
    try:
        run_service(engine, "orders", settings, "tenant", ["tenant_id"], str(TENANT), dry=False)
        with engine.connect() as conn:
            table = metadata_for("orders").tables["customers"]
            query = sa.select(table.c.name, table.c.email, table.c.phone).where(
                table.c.tenant_id == TENANT
            )
            customers = [tuple(row) for row in conn.execute(query)]
    finally:
        engine.dispose()
    assert customers
    assert set(customers) == {("erased", None, None)}


def test_shared_suppliers_go_only_with_their_last_link(tmp_path: Path) -> None:
    url = sqlite_urls(tmp_path)["suppliers"]
    seed({"suppliers": url})
    engine = create_engine(url)
    links = sa.table("tenant_suppliers", sa.column("tenant_id"), sa.column("supplier_id"))
    suppliers = sa.table("suppliers", sa.column("id"))

    def linked() -> dict[int, set[int]]:
        with engine.connect() as conn:
            result: dict[int, set[int]] = {
                sid: set() for sid in conn.execute(sa.select(suppliers.c.id)).scalars()
            }
            for tenant, sid in conn.execute(sa.select(links.c.tenant_id, links.c.supplier_id)):
                result[sid].add(tenant)
        return result

    try:
        before = linked()
        only_ours = {s for s, who in before.items() if who == {TENANT}}
        shared = {s for s, who in before.items() if TENANT in who and len(who) > 1}
        unlinked = {s for s, who in before.items() if not who}
        # The seed holds every case.
        assert only_ours
        assert shared
        assert unlinked
        run_service(
            engine,
            "suppliers",
            registry().services["suppliers"],
            "tenant",
            ["tenant_id"],
            str(TENANT),
            dry=False,
        )
        after = linked()
    finally:
        engine.dispose()
    assert set(after) == set(before) - only_ours
    assert shared <= set(after)
    assert unlinked <= set(after)
    assert all(TENANT not in who for who in after.values())


def test_weather_data_is_kept_while_subscriptions_go(tmp_path: Path) -> None:
    url = sqlite_urls(tmp_path)["external"]
    seed({"external": url})
    weather = ("weather_stations", "weather_observations")
    before = {t: count(url, t) for t in weather}
    mine = sa.column("tenant_id") == TENANT
    assert count(url, "weather_subscriptions", mine) > 0
    engine = create_engine(url)
    try:
        run_service(
            engine,
            "external",
            registry().services["external"],
            "tenant",
            ["tenant_id"],
            str(TENANT),
            dry=False,
        )
    finally:
        engine.dispose()
    assert {t: count(url, t) for t in weather} == before
    assert all(before.values())
    assert count(url, "weather_subscriptions", mine) == 0
    assert count(url, "weather_subscriptions") > 0
