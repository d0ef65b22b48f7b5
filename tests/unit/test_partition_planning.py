"""Which tables may lose a subject's partition whole (``worker.planning.partitions``).

The schema is read from SQLite and ``orders`` is then given a partitioning scheme, as
PostgreSQL or MariaDB would report it: the choice depends on the plan alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models.erasure import TableAction, TablePolicy
from worker.catalog.model import Catalog, TableName
from worker.catalog.partitions import PartitionScheme
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.planning.building import build_plan
from worker.planning.partitions import partition_tables, unsuitable

SCHEMA = [
    "CREATE TABLE orders (tenant_id TEXT NOT NULL, id INTEGER NOT NULL, note TEXT,"
    " PRIMARY KEY (tenant_id, id))",
    "CREATE TABLE lines (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, order_id INTEGER"
    " NOT NULL, FOREIGN KEY (tenant, order_id) REFERENCES orders (tenant_id, id))",
]
ORDERS = TableName("main", "orders")


def _catalog(tmp_path: Path, extra: list[str], scheme: PartitionScheme | None) -> Catalog:
    engine = create_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        with engine.begin() as conn:
            for statement in [*SCHEMA, *extra]:
                conn.exec_driver_sql(statement)
        catalog = reflect(engine)
    finally:
        engine.dispose()
    tables = dict(catalog.tables)
    tables[ORDERS] = replace(tables[ORDERS], partition_scheme=scheme)
    return replace(catalog, tables=tables)


LIST_TENANT = PartitionScheme("list", ("tenant_id",))


@pytest.mark.parametrize(
    ("scheme", "extra", "policies", "why"),
    [
        # A tenant's own list partition, its lines walked first: removable whole.
        (LIST_TENANT, [], {}, None),
        # Hash partitions hold many tenants.
        (PartitionScheme("hash", ("tenant_id",)), [], {}, "not partitioned by LIST"),
        (PartitionScheme("range", ("tenant_id",)), [], {}, "not partitioned by LIST"),
        (None, [], {}, "not partitioned by LIST"),
        # Partitioned on another column, or on an expression.
        (PartitionScheme("list", ("id",)), [], {}, "exactly its one subject column"),
        (PartitionScheme("list", ()), [], {}, "exactly its one subject column"),
        # A DELETE trigger would not fire on TRUNCATE or DROP.
        (
            LIST_TENANT,
            ["CREATE TRIGGER t AFTER DELETE ON orders BEGIN SELECT 1; END"],
            {},
            "DELETE triggers",
        ),
        # Anonymized rows stay: nothing to drop.
        (
            LIST_TENANT,
            [],
            {"orders": TablePolicy(action=TableAction.ANONYMIZE, set={"note": "x"})},
            "not simply deleted",
        ),
        # A SET NULL reference is cleared, not walked.
        (
            LIST_TENANT,
            [
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, t TEXT, o INTEGER,"
                " FOREIGN KEY (t, o) REFERENCES orders (tenant_id, id) ON DELETE SET NULL)"
            ],
            {},
            "cleared or points back",
        ),
    ],
)
def test_which_tables_may_lose_a_partition_whole(
    tmp_path: Path,
    scheme: PartitionScheme | None,
    extra: list[str],
    policies: dict[str, TablePolicy],
    why: str | None,
) -> None:
    catalog = _catalog(tmp_path, extra, scheme)
    plan = build_plan(catalog, ["tenant_id"], policies)
    reason = unsuitable(plan, ORDERS)
    if why is None:
        assert reason is None
        assert partition_tables(plan) == {ORDERS: "tenant_id"}
    else:
        assert reason is not None
        assert why in reason
        assert ORDERS not in partition_tables(plan)
