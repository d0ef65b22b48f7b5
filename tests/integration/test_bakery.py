"""The bakery estate on real servers: twelve PostgreSQL (or MariaDB) databases, one
tenant erased from each, every other row byte-identical afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.bakery.schema import SERVICES
from examples.bakery.seed import census, registry, seed
from models.erasure import TableAction
from tests.conftest import make_db
from worker.database import create_engine
from worker.planning.model import CycleStrategy
from worker.service import plan_service, run_service

TENANT = 2
#: Cycles the planner must find, per service (none elsewhere); same on every backend.
CYCLES = {"inventory": {CycleStrategy.TREE}, "pos": {CycleStrategy.NULLIFY}}


@pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def estate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """One fresh database per service on the server; service -> URL."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for service in SERVICES:
            db = stack.enter_context(contextlib.contextmanager(make_db)(request.param, tmp_path))
            urls[service] = db.url
        yield urls


def test_erasing_a_tenant_from_every_service_leaves_the_rest_untouched(
    estate: dict[str, str],
) -> None:
    written = seed(estate, tenants=4, scale=0.3)
    assert set(written) == set(SERVICES)
    seed(estate, tenants=4, scale=0.3)  # re-seeding drops and recreates the tables
    reg = registry()
    before = census(estate, TENANT)
    for service, url in estate.items():
        settings = reg.services[service]
        columns = reg.subject_columns(service, "tenant")
        engine = create_engine(url)
        try:
            plan = plan_service(engine, settings, columns)
            preview = run_service(engine, service, settings, "tenant", columns, str(TENANT), True)
            report = run_service(engine, service, settings, "tenant", columns, str(TENANT), False)
        finally:
            engine.dispose()
        kept = sum(
            before.tenant_rows[service][t]
            for t, p in settings.tables.items()
            if p.action is TableAction.ANONYMIZE
        )
        assert {c.strategy for c in plan.cycles} == CYCLES.get(service, set()), service
        assert report.verified, service
        assert report.warnings == [], service
        expected = sum(before.tenant_rows[service].values()) - kept
        assert report.total_rows == preview.total_rows == expected > 0, service
    after = census(estate, TENANT)
    assert after.fingerprints == before.fingerprints
    left = {s: {t: n for t, n in tables.items() if n} for s, tables in after.tenant_rows.items()}
    assert {s: t for s, t in left.items() if t} == {
        "orders": {"customers": before.tenant_rows["orders"]["customers"]}
    }
