"""Partition-aware erasure against PostgreSQL's ON DELETE CASCADE, on a tenant-partitioned
schema. Run with ``make bench`` (``python bench/partitions.py``; ``--rows`` sizes the
erased tenant).

Schema, every table partitioned by LIST (tenant_id), one partition per tenant plus a
DEFAULT partition::

    tenants ─┬─ orders ─── order_items     (order_items: (tenant_id, order_id) -> orders)
             └─ events

``orders``, ``order_items`` and ``events`` carry ``tenant_id`` (a foreign key to
``tenants``). One tenant holds ``--rows`` rows (60% items, 25% orders, 15% events),
``--tenants`` - 1 others a tenth of that each.

A template database is loaded once; each erasure runs on a fresh copy of it
(``CREATE DATABASE ... TEMPLATE``): plain foreign keys for Eraser, ON DELETE CASCADE on
every one for ``DELETE FROM tenants WHERE id = ...`` in one transaction. Each of
``--trials`` (5) rounds erases the tenant once in every way, in a rotating order:

* Eraser, ``partitions = "truncate"`` (the default): partitions nothing references
  (``order_items``, ``events``) are truncated, ``orders`` (referenced by a declared
  foreign key, which PostgreSQL's TRUNCATE refuses) goes row by row;
* Eraser, ``partitions = "drop"``: every partition of the tenant is detached and dropped;
* Eraser, ``partitions = "rows"``: row by row, as before partitions were looked at;
* the cascade.

Printed: seconds and rows/s per way (median, min-max), each way's time against the
cascade's, and, roughly, the longest a concurrent writer inserting into another
tenant's partitions (one statement at a time, in a thread of this process) waited
during each way: a drop locks the partitioned tables, a truncate only the partition.
Every run is verified: the tenant's rows gone, every other tenant's rows counted
unchanged. Databases are named ``eraser_bench_parts_<pid>_*`` and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
SUBJECT_COLUMNS = ("tenant_id", "tenants.id")
SUBJECT = 1
WRITER_TENANT = 2
TABLES = ("tenants", "orders", "order_items", "events")
PARTITIONED = ("orders", "order_items", "events")
WAYS = ("truncate", "drop", "rows", "cascade")

SCHEMA = (
    "CREATE TABLE tenants (id bigint PRIMARY KEY, name text NOT NULL)",
    "CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL,"
    " customer text NOT NULL, total_cents bigint NOT NULL, created_at timestamptz NOT NULL,"
    " PRIMARY KEY (tenant_id, id)) PARTITION BY LIST (tenant_id)",
    "CREATE TABLE order_items (tenant_id bigint NOT NULL, id bigint NOT NULL,"
    " order_id bigint NOT NULL, sku text NOT NULL, quantity integer NOT NULL,"
    " PRIMARY KEY (tenant_id, id)) PARTITION BY LIST (tenant_id)",
    "CREATE INDEX ON order_items (tenant_id, order_id)",
    "CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, kind text NOT NULL,"
    " payload jsonb NOT NULL, PRIMARY KEY (tenant_id, id)) PARTITION BY LIST (tenant_id)",
)
#: (name, child, columns, parent, parent columns)
FOREIGN_KEYS = (
    ("orders_tenant_fkey", "orders", "tenant_id", "tenants", "id"),
    ("events_tenant_fkey", "events", "tenant_id", "tenants", "id"),
    ("order_items_tenant_fkey", "order_items", "tenant_id", "tenants", "id"),
    ("order_items_order_fkey", "order_items", "tenant_id, order_id", "orders", "tenant_id, id"),
)
LOAD = (
    "INSERT INTO tenants SELECT t, 'Tenant ' || t FROM generate_series(1, :tenants) t",
    "INSERT INTO orders SELECT t, g, 'c' || (g % 997), (g * 7919) % 100000,"
    " timestamptz '2021-01-01' + g * interval '1 minute'"
    " FROM generate_series(1, :tenants) t,"
    " LATERAL generate_series(1, CASE WHEN t = 1 THEN :orders ELSE :other_orders END) g",
    "INSERT INTO order_items SELECT o.tenant_id, (o.id - 1) * 3 + k, o.id, 'SKU-' || k, 1 + k"
    " FROM orders o, generate_series(1, 3) k"
    " WHERE (o.id - 1) * 3 + k <= CASE WHEN o.tenant_id = 1 THEN :items ELSE :other_items END",
    "INSERT INTO events SELECT t, g, 'view', jsonb_build_object('seq', g)"
    " FROM generate_series(1, :tenants) t,"
    " LATERAL generate_series(1, CASE WHEN t = 1 THEN :events ELSE :other_events END) g",
)


@dataclass
class Run:
    way: str
    seconds: float
    rows: int
    writer_max_ms: float
    partitions: list[str] = field(default_factory=list)


def url(name: str) -> sa.URL:
    return sa.make_url(ADMIN_URL).set(database=name)


def admin_sql(admin: Engine, *statements: str) -> None:
    with admin.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def build_template(admin: Engine, name: str, rows: int, tenants: int) -> None:
    admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    sizes = {
        "orders": rows // 4,
        "items": rows * 6 // 10,
        "events": rows - rows // 4 - rows * 6 // 10,
    }
    params = {"tenants": tenants, **sizes}
    params.update({f"other_{k}": max(1, v // 10) for k, v in sizes.items()})
    engine = create_engine(url(name))
    try:
        with engine.begin() as conn:
            for statement in SCHEMA:
                conn.exec_driver_sql(statement)
            for table in PARTITIONED:
                for t in range(1, tenants + 1):
                    conn.exec_driver_sql(
                        f"CREATE TABLE {table}_t{t} PARTITION OF {table} FOR VALUES IN ({t})"
                    )
                conn.exec_driver_sql(f"CREATE TABLE {table}_rest PARTITION OF {table} DEFAULT")
            for statement in LOAD:
                conn.execute(sa.text(statement), params)
            for fk, child, cols, parent, pcols in FOREIGN_KEYS:
                conn.exec_driver_sql(
                    f"ALTER TABLE {child} ADD CONSTRAINT {fk} FOREIGN KEY ({cols})"
                    f" REFERENCES {parent} ({pcols})"
                )
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


def copy(admin: Engine, template: str, name: str, cascade: bool) -> Engine:
    admin_sql(
        admin,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        f'CREATE DATABASE "{name}" TEMPLATE "{template}"',
    )
    engine = create_engine(url(name))
    if cascade:
        with engine.begin() as conn:
            for fk, child, cols, parent, pcols in FOREIGN_KEYS:
                conn.exec_driver_sql(
                    f"ALTER TABLE {child} DROP CONSTRAINT {fk}, ADD CONSTRAINT {fk}"
                    f" FOREIGN KEY ({cols}) REFERENCES {parent} ({pcols}) ON DELETE CASCADE"
                )
    return engine


def counts(engine: Engine) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    with engine.connect() as conn:
        for table in TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            for tenant, n in conn.exec_driver_sql(
                f"SELECT {column}, count(*) FROM {table} GROUP BY 1"
            ):
                found[(table, int(tenant))] = int(n)
    return found


class Writer:
    """Inserts events of another tenant one autocommitted statement at a time and keeps
    the longest wait (rough: a thread of this process, sharing its GIL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.longest = 0.0
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        time.sleep(0.2)
        self.longest = 0.0
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        seq = 10_000_000
        with self.engine.connect() as raw:
            conn = raw.execution_options(isolation_level="AUTOCOMMIT")
            while not self._stop.is_set():
                seq += 1
                t0 = time.perf_counter()
                conn.execute(
                    sa.text("INSERT INTO events VALUES (:t, :id, 'write', '{}')"),
                    {"t": WRITER_TENANT, "id": seq},
                )
                self.longest = max(self.longest, time.perf_counter() - t0)
                self.writes += 1
                time.sleep(0.002)


def run_way(engine: Engine, way: str) -> Run:
    before = counts(engine)
    expected = sum(n for (_, tenant), n in before.items() if tenant == SUBJECT)
    with Writer(engine) as writer:
        started = time.perf_counter()
        if way == "cascade":
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM tenants WHERE id = :t"), {"t": SUBJECT})
            removed, partitions = expected, []
        else:
            plan = build_plan(reflect(engine), list(SUBJECT_COLUMNS))
            report = erase(engine, plan, SUBJECT, ExecutionOptions(partitions=way))
            if not report.verified:
                raise SystemExit(f"{way}: erasure not verified")
            removed, partitions = report.total_rows, report.partitions_removed
        seconds = time.perf_counter() - started
    after = counts(engine)
    writes = after.pop(("events", WRITER_TENANT)) - before.pop(("events", WRITER_TENANT))
    kept = {k: v for k, v in before.items() if k[1] != SUBJECT}
    if after != kept or removed != expected or writes <= 0:
        raise SystemExit(f"{way}: other tenants changed or counts differ ({removed}/{expected})")
    return Run(way, seconds, removed, writer.longest * 1000, list(partitions))


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):8.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="the erased tenant's rows")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    prefix = f"eraser_bench_parts_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"{prefix}_template", *(f"{prefix}_{way}" for way in WAYS)]
    runs: dict[str, list[Run]] = {way: [] for way in WAYS}
    try:
        t0 = time.perf_counter()
        build_template(admin, names[0], args.rows, args.tenants)
        print(
            f"loaded {args.rows} rows for the tenant, {args.tenants} tenants, "
            f"in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        for trial in range(args.trials):
            order = WAYS[trial % len(WAYS) :] + WAYS[: trial % len(WAYS)]
            for way in order:
                engine = copy(admin, names[0], f"{prefix}_{way}", way == "cascade")
                try:
                    runs[way].append(run_way(engine, way))
                finally:
                    engine.dispose()
            print(
                f"trial {trial + 1}: "
                + ", ".join(f"{r[-1].way} {r[-1].seconds:.3f} s" for r in runs.values()),
                flush=True,
            )
        report(runs)
    finally:
        for name in names:
            admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return 0


def report(runs: dict[str, list[Run]]) -> None:
    cascade = statistics.median(r.seconds for r in runs["cascade"])
    print(
        f"\n{'way':10} {'seconds median (min-max)':30} {'rows/s median':>14} "
        f"{'x cascade time':>15} {'writer max wait ms':>20}  partitions removed whole"
    )
    for way, done in runs.items():
        seconds = [r.seconds for r in done]
        rate = statistics.median(r.rows / r.seconds for r in done)
        ratio = statistics.median(seconds) / cascade
        waits = [r.writer_max_ms for r in done]
        print(
            f"{way:10} {spread(seconds):30} {rate:14,.0f} {ratio:15.2f} "
            f"{spread(waits):>20}  {', '.join(done[-1].partitions) or '-'}"
        )
    print(f"(rows per erasure: {runs['cascade'][0].rows}; loaded machine: indicative only)")


if __name__ == "__main__":
    sys.exit(main())
