"""A kept plan is checked against the schema's version in the verification statement
(``worker.service.nothing_here``): a schema change is never missed, on every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.registry import Registry
from models.store.database import JobStore
from tests.conftest import TargetDB, make_db
from tests.unit import shop_world
from tests.unit.job_world import (
    OTHER,
    SUBJECT,
    Targets,
    _task,
)
from tests.unit.shop_world import (
    TARGETS,
    _counts,
    _history,
    _run,
    _statements,
    _submit,
)
from worker.service import PlanCache, nothing_here

pytestmark = pytest.mark.usefixtures("broker_emptied")

#: This world's targets: twenty customers in shop, half of them the subject's.
targets = shop_world.targets
#: This world's broker, emptied before and after each test.
broker_emptied = shop_world.broker_emptied


SHOP_DDL = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id VARCHAR(40) NOT NULL)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
    "FOREIGN KEY (customer_id) REFERENCES customers (id))",
    f"INSERT INTO customers VALUES (1, '{OTHER}'), (2, '{OTHER}')",
    "INSERT INTO orders VALUES (1, 1), (2, 2)",
    "CREATE TABLE visits (id INTEGER PRIMARY KEY, tenant_id VARCHAR(40) NOT NULL)",
)


#: What happens to the target after its plan was kept (DDL first, then a subject row).
CHANGES = {
    # a new table with the subject column
    "new table": (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id VARCHAR(40) NOT NULL)",
        f"INSERT INTO notes VALUES (1, '{SUBJECT}')",
    ),
    # an existing table gains the subject column
    "new column": (
        "ALTER TABLE orders ADD tenant_id VARCHAR(40)",
        f"UPDATE orders SET tenant_id = '{SUBJECT}' WHERE id = 2",
    ),
    # a planned table with the subject column goes (the kept plan's statement names it)
    "dropped table": ("DROP TABLE visits", f"INSERT INTO customers VALUES (3, '{SUBJECT}')"),
    # no schema change: a subject row in a planned table
    "new row": (f"INSERT INTO customers VALUES (3, '{SUBJECT}')",),
}


#: ``nothing_here`` runs the kept plan's statement before it looks at the version; a
#: plan naming a dropped table makes that statement fail, so it raises instead of
#: rebuilding the plan (the task's general path rebuilds it: see the test below).
#: Where the subject's row was put by each change: (table, column).
PUT = {
    "new table": ("notes", "tenant_id"),
    "new column": ("orders", "tenant_id"),
    "dropped table": ("customers", "tenant_id"),
    "new row": ("customers", "tenant_id"),
}


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDB]:
    """A shop on each target backend in turn, holding nothing of SUBJECT."""
    for db in make_db(request.param, tmp_path):
        db.run(*SHOP_DDL)
        yield db


def _nothing_here(db: TargetDB, registry: Registry, plans: PlanCache) -> bool:
    report = nothing_here(
        db.engine,
        "shop",
        registry.services["shop"],
        "tenant",
        registry.subject_columns("shop", "tenant"),
        SUBJECT,
        plans,
    )
    if report is not None:
        assert (report.total_rows, report.verified) == (0, True)
    return report is not None


@pytest.mark.parametrize("change", CHANGES)
def test_a_kept_plan_does_not_hide_rows_after_the_schema_changed(
    target: TargetDB, registry: Registry, change: str
) -> None:
    plans = PlanCache()
    assert _nothing_here(target, registry, plans)
    kept = plans.peek("shop", "tenant")
    assert kept is not None
    with _statements(target.engine) as statements:
        assert _nothing_here(target, registry, plans)  # the kept plan serves again...
    reads = [s for s in statements if not s.startswith("SELECT set_config(")]
    assert len(reads) == 1  # ...checked against the schema's version in one read
    # (On PostgreSQL the subject's value goes first, in a statement of its own that keeps
    # it out of the read's text: docs/privacy.md, "The target databases' logs".)
    assert len(statements) - len(reads) == (1 if target.backend == "postgresql" else 0)
    assert plans.peek("shop", "tenant") == kept

    target.run(*CHANGES[change])

    assert not _nothing_here(target, registry, plans)
    now = plans.peek("shop", "tenant")
    assert now is not None
    if change == "new row":
        assert now[2] is kept[2]
    else:
        assert now[1] != kept[1]  # the version the new plan was made at
        assert now[2].fingerprint != kept[2].fingerprint


@pytest.mark.postgres
def test_a_kept_plan_sees_a_table_added_in_another_schema(pg: TargetDB, registry: Registry) -> None:
    pg.run(*SHOP_DDL)
    plans = PlanCache()
    assert _nothing_here(pg, registry, plans)

    pg.run(
        'CREATE TABLE "other side".notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL)',
        f"INSERT INTO \"other side\".notes VALUES (1, '{SUBJECT}')",
    )

    assert not _nothing_here(pg, registry, plans)


@pytest.mark.parametrize("change", ["new table", "new column", "dropped table"])
def test_a_task_after_a_schema_change_erases_what_the_kept_plan_did_not_know(
    store: JobStore, registry: Registry, target: TargetDB, change: str
) -> None:
    targets = Targets(registry, {"shop": target.engine})
    plans = PlanCache()  # one worker's: kept from one task to the next
    before = _submit(store, registry, subject=SUBJECT)
    assert _run(store, registry, before, "shop", targets, plans).result.total_rows == 0
    kept = plans.peek("shop", "tenant")
    assert kept is not None

    target.run(*CHANGES[change])
    job_id = _submit(store, registry, subject=SUBJECT)
    outcome = _run(store, registry, job_id, "shop", targets, plans)

    assert (outcome.result.status, outcome.result.total_rows) == ("succeeded", 1)
    task = _task(store, job_id, "shop")
    assert (task.total_rows, task.verified, task.attempts) == (1, True, 1)
    assert sum(_counts(task).values()) == 1
    assert _history(store, job_id, "shop") == [(1, "succeeded")]
    assert task.plan_fingerprint != _task(store, before, "shop").plan_fingerprint
    table, column = PUT[change]
    with target.engine.connect() as conn:
        left = conn.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE {column} = '{SUBJECT}'"
        ).scalar()
        customers = conn.exec_driver_sql("SELECT count(*) FROM customers").scalar()
    assert (left, customers) == (0, 2)
    now = plans.peek("shop", "tenant")
    assert now is not None
    assert now[1] != kept[1]  # the worker keeps the new plan from now on
