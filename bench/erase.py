"""Eraser benchmark: batched, row-locked erasure against PostgreSQL's native ON DELETE CASCADE.

Run with ``make bench`` (``python bench/erase.py``); ``--quick`` erases a 100k-row tenant.

It builds a multi-tenant schema of ten tables in throw-away databases named
``eraser_bench_<pid>_*`` on the local PostgreSQL (all dropped at the end, also on failure)::

    tenants ─┬─ customers ─┬─ orders ─┬─ order_items ─── product_variants ─── products
             │             │          └─ payments
             │             ├─ invoices ─── invoice_lines
             │             └─ events (customer_id nullable)

customers, products, orders, invoices and events carry ``tenant_id`` (a foreign key to
tenants); product_variants, order_items, payments and invoice_lines are reached only
through foreign keys. Every foreign-key and tenant column is indexed. The erased tenant
holds ``--rows`` rows (1,000,000 by default), a second tenant a tenth of that, and 18 more
``--other-rows`` each; the rows of all tenants are interleaved in the heap, as if they
had arrived over time. Two physically identical copies are made (``CREATE DATABASE ...
TEMPLATE``): plain foreign keys (NO ACTION) for Eraser, and ON DELETE CASCADE on every
foreign key for the native baseline ``DELETE FROM tenants WHERE id = ...``. Both are
VACUUM ANALYZEd before each measurement.

Printed, all measured in the same run:

* rows/s of ``erase()`` (in-process, with a progress callback), its wall time including
  reflect + plan, rows/s of the native cascading DELETE, and their ratio (target >= 0.7);
* rows/s of a hand-written, schema-specific PL/pgSQL loop doing the same batched,
  child-first deletes inside the server (a third copy, plain foreign keys): the best a
  per-service deletion script can do, and Eraser's ratio to it;
* the same erasure with every batch run from the client (``server_batches=False``) on a
  fourth copy, with its own concurrent writer, for reference;
* the longest transaction Eraser ran, timed with SQLAlchemy ``begin``/``commit``/
  ``rollback`` events on the engine it was given, plus the COMMIT round trip itself
  (timed by wrapping that engine's ``dialect.do_commit``: row locks last until it
  returns); for batches run in the server, the longest as the loop timed it itself
  (``Progress.server_batch_seconds``); and the longest gap between two progress
  callbacks;
* p99 latency of single-row writes (UPDATE/INSERT) to other tenants' rows, by a writer
  in a separate process (so that this process's GIL, busy with Eraser, is not part of
  what is measured): idle before vs during the erasure, with errors, lock waits
  (pg_stat_activity sampled every 20 ms), how long the writer and its backend waited
  for a CPU and spent on one per write (Linux schedstat), and the slowest writes with
  when they came;
* the big tenant is erased ``--trials`` times (5) by Eraser and as often by the native
  cascade, each time from a fresh, physically identical copy, alternating which goes
  first, each erasure with the writer's idle window on its copy just before it. One
  erasure gives the writer some 600 writes, so its p99 is the sixth-slowest of them and
  moved from 1.6x to 5.0x idle between identical runs; the target (< 3x idle, no lock
  waits, no errors) is judged on every erasure's writes pooled against every idle
  window's, and so is the throughput ratio (total rows over total seconds);
* the WAL each erasure wrote (``pg_current_wal_lsn()`` before and after): Eraser's
  batches compress their full-page images (lz4) where the role may, the cascade runs
  with the server's own ``wal_compression``;
* the peak RSS of this process while erasing the 10x smaller tenant and the big one
  (target < 150 MB, and flat);
* where Eraser's time goes: per kind of SQL statement, in COMMITs, and in Python;
* a run on a small copy without an index on ``order_items(order_id)``: the planner's
  warning and rows/s, against the same copy once the index is back;
* verification: ``report.verified`` and every other tenant's row counts unchanged.

Autovacuum is off for the benchmark's tables (it runs ``VACUUM ANALYZE`` itself), and a
``CHECKPOINT`` precedes every measured window, the idle baselines included.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from types import FrameType
from typing import Any

import psutil
import psycopg2
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from models.erasure import ErasureReport
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions, Progress
from worker.planning.building import build_plan

ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
SUBJECT_COLUMNS = ("tenant_id", "tenants.id")
BIG_TENANT = 1
SMALL_TENANT = 2
TENANTS = 20
WRITER_APP = "eraser-bench-writer"
MONITOR_APP = "eraser-bench-monitor"
NOINDEX_OTHER_ROWS = 2_000

TABLES = (
    "tenants",
    "customers",
    "products",
    "product_variants",
    "orders",
    "order_items",
    "payments",
    "invoices",
    "invoice_lines",
    "events",
)

SCHEMA = """
CREATE TABLE tenants (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    plan text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    number integer NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE products (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    number integer NOT NULL,
    name text NOT NULL,
    price_cents integer NOT NULL
);
CREATE TABLE product_variants (
    id bigserial PRIMARY KEY,
    product_id bigint NOT NULL,
    position integer NOT NULL,
    sku text NOT NULL,
    stock integer NOT NULL
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    number integer NOT NULL,
    customer_id bigint NOT NULL,
    status text NOT NULL,
    total_cents bigint NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE order_items (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL,
    variant_id bigint NOT NULL,
    quantity integer NOT NULL,
    price_cents integer NOT NULL
);
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL,
    amount_cents bigint NOT NULL,
    method text NOT NULL,
    paid_at timestamptz NOT NULL
);
CREATE TABLE invoices (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    number integer NOT NULL,
    customer_id bigint NOT NULL,
    total_cents bigint NOT NULL,
    issued_at timestamptz NOT NULL
);
CREATE TABLE invoice_lines (
    id bigserial PRIMARY KEY,
    invoice_id bigint NOT NULL,
    description text NOT NULL,
    amount_cents bigint NOT NULL
);
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    customer_id bigint,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
"""

#: Rows of each tenant are interleaved with the other tenants' in arrival order.
LOAD = (
    """
    INSERT INTO tenants (id, name, plan, created_at)
    SELECT tenant_id, 'Tenant ' || tenant_id,
           (ARRAY['free', 'team', 'enterprise'])[1 + tenant_id % 3],
           timestamptz '2020-01-01' + tenant_id * interval '1 day'
    FROM sizes ORDER BY tenant_id
    """,
    """
    INSERT INTO customers (tenant_id, number, name, email, created_at)
    SELECT s.tenant_id, g, 'Customer ' || g, 'c' || g || '@t' || s.tenant_id || '.example.com',
           timestamptz '2021-01-01' + (g::float8 / s.customers) * interval '1000 days'
    FROM sizes s CROSS JOIN LATERAL generate_series(1, s.customers) AS g
    ORDER BY g::float8 / s.customers, s.tenant_id
    """,
    """
    INSERT INTO products (tenant_id, number, name, price_cents)
    SELECT s.tenant_id, g, 'Product ' || g, 100 + (g::bigint * 7919) % 99900
    FROM sizes s CROSS JOIN LATERAL generate_series(1, s.products) AS g
    ORDER BY g::float8 / s.products, s.tenant_id
    """,
    """
    INSERT INTO product_variants (product_id, position, sku, stock)
    SELECT p.id, v, 'SKU-' || p.id || '-' || v, (p.id + v) % 50
    FROM products p CROSS JOIN generate_series(1, 3) AS v
    ORDER BY p.id, v
    """,
    """
    INSERT INTO orders (tenant_id, number, customer_id, status, total_cents, created_at)
    SELECT s.tenant_id, g, c.id,
           (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
           (g::bigint * 7919) % 100000,
           timestamptz '2021-01-01' + (g::float8 / s.orders) * interval '1000 days'
    FROM sizes s CROSS JOIN LATERAL generate_series(1, s.orders) AS g
    JOIN customers c ON c.tenant_id = s.tenant_id
                    AND c.number = 1 + (g::bigint * 7919) % s.customers
    ORDER BY g::float8 / s.orders, s.tenant_id
    """,
    """
    INSERT INTO order_items (order_id, variant_id, quantity, price_cents)
    SELECT o.id, v.id, 1 + (o.number + k) % 4, 100 + (o.number::bigint * k) % 9900
    FROM orders o
    JOIN sizes s ON s.tenant_id = o.tenant_id
    CROSS JOIN LATERAL generate_series(1, 2 + o.number % 2) AS k
    JOIN products p ON p.tenant_id = o.tenant_id
                   AND p.number = 1 + (o.number::bigint * 31 + k * 17) % s.products
    JOIN product_variants v ON v.product_id = p.id AND v.position = 1 + (o.number + k) % 3
    ORDER BY o.id, k
    """,
    """
    INSERT INTO payments (order_id, amount_cents, method, paid_at)
    SELECT o.id, o.total_cents, (ARRAY['card', 'transfer', 'wallet'])[1 + o.number % 3],
           o.created_at + interval '1 hour'
    FROM orders o ORDER BY o.id
    """,
    """
    INSERT INTO invoices (tenant_id, number, customer_id, total_cents, issued_at)
    SELECT s.tenant_id, g, c.id, (g::bigint * 104729) % 100000,
           timestamptz '2021-01-01' + (g::float8 / s.invoices) * interval '1000 days'
    FROM sizes s CROSS JOIN LATERAL generate_series(1, s.invoices) AS g
    JOIN customers c ON c.tenant_id = s.tenant_id
                    AND c.number = 1 + (g::bigint * 104729) % s.customers
    ORDER BY g::float8 / s.invoices, s.tenant_id
    """,
    """
    INSERT INTO invoice_lines (invoice_id, description, amount_cents)
    SELECT i.id, 'Line ' || k, (i.total_cents + k) % 50000
    FROM invoices i CROSS JOIN LATERAL generate_series(1, 2 + (i.number % 5 < 2)::int) AS k
    ORDER BY i.id, k
    """,
    """
    INSERT INTO events (tenant_id, customer_id, kind, payload, created_at)
    SELECT s.tenant_id, CASE WHEN g % 10 = 0 THEN NULL ELSE c.id END,
           (ARRAY['login', 'view', 'checkout', 'export'])[1 + g % 4],
           jsonb_build_object('seq', g, 'source', 'web'),
           timestamptz '2021-01-01' + (g::float8 / s.events) * interval '1000 days'
    FROM sizes s CROSS JOIN LATERAL generate_series(1, s.events) AS g
    JOIN customers c ON c.tenant_id = s.tenant_id AND c.number = 1 + (g::bigint * 131) % s.customers
    ORDER BY g::float8 / s.events, s.tenant_id
    """,
)

NOINDEX_TABLE = "order_items"
NOINDEX_INDEX = "order_items_order_id_idx"

INDEXES = (
    "ALTER TABLE customers ADD CONSTRAINT customers_tenant_number_key UNIQUE (tenant_id, number)",
    "ALTER TABLE products ADD CONSTRAINT products_tenant_number_key UNIQUE (tenant_id, number)",
    "ALTER TABLE product_variants ADD CONSTRAINT product_variants_product_position_key"
    " UNIQUE (product_id, position)",
    "ALTER TABLE orders ADD CONSTRAINT orders_tenant_number_key UNIQUE (tenant_id, number)",
    "CREATE INDEX orders_customer_id_idx ON orders (customer_id)",
    f"CREATE INDEX {NOINDEX_INDEX} ON order_items (order_id)",
    "CREATE INDEX order_items_variant_id_idx ON order_items (variant_id)",
    "CREATE INDEX payments_order_id_idx ON payments (order_id)",
    "ALTER TABLE invoices ADD CONSTRAINT invoices_tenant_number_key UNIQUE (tenant_id, number)",
    "CREATE INDEX invoices_customer_id_idx ON invoices (customer_id)",
    "CREATE INDEX invoice_lines_invoice_id_idx ON invoice_lines (invoice_id)",
    "CREATE INDEX events_tenant_id_idx ON events (tenant_id)",
    "CREATE INDEX events_customer_id_idx ON events (customer_id)",
)

#: (child table, column, parent table); every parent column is ``id``.
FOREIGN_KEYS = (
    ("customers", "tenant_id", "tenants"),
    ("products", "tenant_id", "tenants"),
    ("product_variants", "product_id", "products"),
    ("orders", "tenant_id", "tenants"),
    ("orders", "customer_id", "customers"),
    ("order_items", "order_id", "orders"),
    ("order_items", "variant_id", "product_variants"),
    ("payments", "order_id", "orders"),
    ("invoices", "tenant_id", "tenants"),
    ("invoices", "customer_id", "customers"),
    ("invoice_lines", "invoice_id", "invoices"),
    ("events", "tenant_id", "tenants"),
    ("events", "customer_id", "customers"),
)

#: Rows of every table per tenant (FK-only tables through their parent).
COUNT_BY_TENANT = {
    "tenants": "SELECT id, 1 FROM tenants",
    "customers": "SELECT tenant_id, count(*) FROM customers GROUP BY 1",
    "products": "SELECT tenant_id, count(*) FROM products GROUP BY 1",
    "product_variants": "SELECT p.tenant_id, count(*) FROM product_variants x"
    " JOIN products p ON p.id = x.product_id GROUP BY 1",
    "orders": "SELECT tenant_id, count(*) FROM orders GROUP BY 1",
    "order_items": "SELECT o.tenant_id, count(*) FROM order_items x"
    " JOIN orders o ON o.id = x.order_id GROUP BY 1",
    "payments": "SELECT o.tenant_id, count(*) FROM payments x"
    " JOIN orders o ON o.id = x.order_id GROUP BY 1",
    "invoices": "SELECT tenant_id, count(*) FROM invoices GROUP BY 1",
    "invoice_lines": "SELECT i.tenant_id, count(*) FROM invoice_lines x"
    " JOIN invoices i ON i.id = x.invoice_id GROUP BY 1",
    "events": "SELECT tenant_id, count(*) FROM events GROUP BY 1",
}

Counts = dict[str, dict[int, int]]


# --- data set -------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantSize:
    """How many rows of the anchor tables one tenant gets; children follow from them
    (3 variants per product, 2.5 items and 1 payment per order, 2.4 lines per invoice)."""

    tenant_id: int
    customers: int
    products: int
    orders: int
    invoices: int
    events: int

    @classmethod
    def for_rows(cls, tenant_id: int, rows: int) -> TenantSize:
        def part(share: float) -> int:
            return max(1, round(rows * share))

        return cls(tenant_id, part(0.05), part(0.01), part(0.12), part(0.05), part(0.20))


def tenant_sizes(big: int, small: int, other: int) -> list[TenantSize]:
    sizes = [TenantSize.for_rows(BIG_TENANT, big), TenantSize.for_rows(SMALL_TENANT, small)]
    sizes += [TenantSize.for_rows(t, other) for t in range(3, TENANTS + 1)]
    return sizes


def db_url(name: str) -> sa.URL:
    return sa.make_url(ADMIN_URL).set(database=name)


def dsn(name: str) -> str:
    """A libpq DSN for the writer process (there is no password; it is never printed)."""
    return db_url(name).render_as_string(hide_password=False)


def create_database(admin: Engine, name: str, template: str | None = None) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template is None:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        else:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_sql(conn: Connection, sql: str) -> None:
    """Run SQL text as it is: without parameters psycopg2 leaves its ``%`` signs alone."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def load(engine: Engine, sizes: Sequence[TenantSize]) -> None:
    """Create the schema and fill it with INSERT ... SELECT generate_series."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
        raw_sql(conn, SCHEMA)
        conn.exec_driver_sql(
            "CREATE TEMP TABLE sizes (tenant_id bigint PRIMARY KEY, customers int,"
            " products int, orders int, invoices int, events int) ON COMMIT DROP"
        )
        conn.execute(
            sa.text(
                "INSERT INTO sizes VALUES (:tenant_id, :customers, :products, :orders,"
                " :invoices, :events)"
            ),
            [s.__dict__ for s in sizes],
        )
        for stmt in LOAD:
            raw_sql(conn, stmt)
        for stmt in INDEXES:
            raw_sql(conn, stmt)
        for child, column, parent in FOREIGN_KEYS:
            conn.exec_driver_sql(
                f"ALTER TABLE {child} ADD CONSTRAINT {child}_{column}_fkey"
                f" FOREIGN KEY ({column}) REFERENCES {parent} (id)"
            )
        # The benchmark vacuums on its own schedule: an autovacuum worker starting in
        # one measured window and not in another (the 1M-row delete triggers it) would
        # be measured as the erasure's, or the idle baseline's, doing.
        for table in TABLES:
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def make_cascading(engine: Engine) -> None:
    """Turn every foreign key into ON DELETE CASCADE (same data, same physical layout)."""
    with engine.begin() as conn:
        for child, column, parent in FOREIGN_KEYS:
            name = f"{child}_{column}_fkey"
            conn.exec_driver_sql(
                f"ALTER TABLE {child} DROP CONSTRAINT {name}, ADD CONSTRAINT {name}"
                f" FOREIGN KEY ({column}) REFERENCES {parent} (id) ON DELETE CASCADE"
            )


def vacuum_analyze(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def settle() -> None:
    """Write out what loading and copying left dirty (``CHECKPOINT``) before a measured
    window: a checkpoint falling in one window and not another would be measured as part
    of what runs in it (the idle baseline's p99 ranged from 0.6 to 2.1 ms without this)."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("CHECKPOINT")
    finally:
        admin.dispose()


def wal_position() -> int:
    """The server's current WAL position in bytes (``pg_current_wal_lsn()``): the WAL an
    erasure wrote is the difference across it (the concurrent writer's few KB included)."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(
                conn.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar_one()
            )
    finally:
        admin.dispose()


def run_sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt)


def tenant_counts(engine: Engine) -> Counts:
    counts: Counts = {}
    with engine.connect() as conn:
        for table, query in COUNT_BY_TENANT.items():
            counts[table] = {int(t): int(n) for t, n in conn.exec_driver_sql(query)}
        conn.rollback()
    return counts


def rows_of(counts: Counts, tenant: int) -> int:
    return sum(per.get(tenant, 0) for per in counts.values())


def others_unchanged(before: Counts, after: Counts, erased: int, inserted_events: int) -> str:
    """'' when every other tenant's rows are intact (events may have grown by exactly the
    writer's inserts), else a description of the difference (counts only)."""
    problems = []
    for table in TABLES:
        b = {t: n for t, n in before[table].items() if t != erased}
        a = {t: n for t, n in after[table].items() if t != erased}
        if table == "events":
            grown = sum(a.values()) - sum(b.values())
            if grown != inserted_events or any(a.get(t, 0) < n for t, n in b.items()):
                problems.append(f"events: +{grown} rows, writer inserted {inserted_events}")
        elif a != b:
            problems.append(f"{table}: {sum(b.values())} -> {sum(a.values())} rows")
    left = rows_of(after, erased)
    if left:
        problems.append(f"{left} rows of the erased tenant left")
    return "; ".join(problems)


# --- concurrent writer (a separate process) -------------------------------------------


@dataclass
class WriterResult:
    latencies_ms: list[float]
    #: When each write started (``time.monotonic()``, comparable across processes on
    #: Linux) and what it was (U customers, O orders, I events).
    started: list[float]
    kinds: str
    errors: dict[str, int]
    inserts: int
    seconds: float
    #: pg_stat_activity samples, and in how many the writer / Eraser waited on a lock.
    lock_samples: int = 0
    writer_lock_waits: int = 0
    eraser_lock_waits: int = 0
    #: Time the writer process and its PostgreSQL backend spent runnable but waiting
    #: for a CPU (Linux ``/proc/<pid>/schedstat``; None elsewhere).
    run_queue_ms: float | None = None
    #: Time the writer's main thread and its backend spent on a CPU (schedstat): what
    #: the writes cost them (about 290 µs each idle, 370 during either erasure).
    cpu_ms: float | None = None

    @property
    def ops(self) -> int:
        return len(self.latencies_ms)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def slow(self, threshold_ms: float) -> int:
        return sum(1 for x in self.latencies_ms if x > threshold_ms)


class LockSampler:
    """Samples pg_stat_activity every 20 ms: is the writer, or Eraser, waiting on a lock?
    It runs in the writer's process, so it takes nothing from the process running Eraser."""

    def __init__(self, db: str, interval: float = 0.02) -> None:
        self.db = db
        self.interval = interval
        self.samples = 0
        self.writer_waits = 0
        self.eraser_waits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)

    def reset(self) -> None:
        self.samples = self.writer_waits = self.eraser_waits = 0

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = psycopg2.connect(ADMIN_URL, application_name=MONITOR_APP)
        conn.autocommit = True
        cur = conn.cursor()
        try:
            while not self._stop.wait(self.interval):
                cur.execute(
                    "SELECT count(*) FILTER (WHERE application_name = %s),"
                    " count(*) FILTER (WHERE application_name = 'eraser')"
                    " FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    (WRITER_APP, self.db),
                )
                writer, eraser_ = cur.fetchone() or (0, 0)
                self.samples += 1
                self.writer_waits += int(writer > 0)
                self.eraser_waits += int(eraser_ > 0)
        finally:
            conn.close()


#: How long the writer runs, unmeasured, before it says it is ready: a new process's and
#: a new backend's first statements (imports, catalog caches, plans) took 4-10 ms each,
#: and counted in a 2-second window they were its p99, whatever ran next to it.
WARMUP_SECONDS = 1.0


def _writer_main(
    db: str,
    target: str,
    customers: list[tuple[int, int]],
    orders: list[int],
    pause_s: float,
    ready: MpEvent,
    stop: MpEvent,
    out: mp.Queue[dict[str, Any]],
) -> None:
    """Single-row UPDATE/INSERT on other tenants' rows in a loop, autocommit, timed
    once warmed up."""
    rng = random.Random(os.getpid())
    conn = psycopg2.connect(target, application_name=WRITER_APP)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SET lock_timeout = '2s'")
    cur.execute("SELECT pg_backend_pid()")
    pids = (os.getpid(), int((cur.fetchone() or (0,))[0]))
    latencies: list[float] = []
    started: list[float] = []
    kinds: list[str] = []
    errors: dict[str, int] = {}
    sampler = LockSampler(db)
    with sampler:
        warm = threading.Event()
        timer = threading.Timer(WARMUP_SECONDS, warm.set)
        timer.start()
        inserts = _write_loop(cur, rng, customers, orders, pause_s, warm, [], [], [], errors)
        sampler.reset()
        before = schedstat(pids)
        ready.set()
        opened = time.perf_counter()
        inserts += _write_loop(
            cur, rng, customers, orders, pause_s, stop, latencies, started, kinds, errors
        )
        seconds = time.perf_counter() - opened
        after = schedstat(pids)
    conn.close()
    spent = None
    if before is not None and after is not None:
        spent = [(a - b) / 1e6 for a, b in zip(after, before, strict=True)]
    out.put(
        {
            "cpu_ms": None if spent is None else spent[0],
            "run_queue_ms": None if spent is None else spent[1],
            "latencies_ms": latencies,
            "started": started,
            "kinds": "".join(kinds),
            "errors": errors,
            "inserts": inserts,
            "seconds": seconds,
            "lock_samples": sampler.samples,
            "writer_lock_waits": sampler.writer_waits,
            "eraser_lock_waits": sampler.eraser_waits,
        }
    )


def schedstat(pids: Sequence[int]) -> tuple[int, int] | None:
    """Total time (ns) the main threads of ``pids`` have spent on a CPU, and waiting on
    a run queue for one (Linux ``/proc/<pid>/schedstat``; None elsewhere)."""
    try:
        on_cpu = waiting = 0
        for pid in pids:
            with open(f"/proc/{pid}/schedstat") as f:
                fields = f.read().split()
            on_cpu += int(fields[0])
            waiting += int(fields[1])
        return on_cpu, waiting
    except (OSError, IndexError, ValueError):
        return None


def _write_loop(
    cur: Any,
    rng: random.Random,
    customers: list[tuple[int, int]],
    orders: list[int],
    pause_s: float,
    stop: MpEvent | threading.Event,
    latencies: list[float],
    started: list[float],
    kinds: list[str],
    errors: dict[str, int],
) -> int:
    """Returns the number of committed INSERTs."""
    inserts = 0
    while not stop.is_set():
        op = rng.randrange(3)
        tenant, customer = rng.choice(customers)
        started.append(time.monotonic())
        kinds.append("UOI"[op])
        t0 = time.perf_counter()
        try:
            if op == 0:
                cur.execute(
                    "UPDATE customers SET name = %s WHERE id = %s",
                    (f"Customer {rng.randrange(10**6)}", customer),
                )
            elif op == 1:
                cur.execute(
                    "UPDATE orders SET status = %s WHERE id = %s",
                    (rng.choice(("paid", "shipped", "delivered")), rng.choice(orders)),
                )
            else:
                cur.execute(
                    "INSERT INTO events (tenant_id, customer_id, kind, payload, created_at)"
                    " VALUES (%s, %s, 'bench.write', '{}', now())",
                    (tenant, customer),
                )
                inserts += 1
        except psycopg2.Error as exc:
            key = exc.pgcode or type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
        latencies.append((time.perf_counter() - t0) * 1000.0)
        if pause_s:
            time.sleep(pause_s)
    return inserts


class ConcurrentWriter:
    """Starts the writer process; ``stop()`` returns what it measured."""

    def __init__(self, db: str, pause_ms: float) -> None:
        engine = create_engine(db_url(db))
        try:
            with engine.connect() as conn:
                q = (
                    "SELECT {cols} FROM {table} WHERE tenant_id NOT IN (:a, :b)"
                    " ORDER BY md5(id::text) LIMIT 5000"
                )
                params = {"a": BIG_TENANT, "b": SMALL_TENANT}
                self.customers = [
                    (int(t), int(i))
                    for t, i in conn.execute(
                        sa.text(q.format(cols="tenant_id, id", table="customers")), params
                    )
                ]
                self.orders = [
                    int(i)
                    for (i,) in conn.execute(sa.text(q.format(cols="id", table="orders")), params)
                ]
        finally:
            engine.dispose()
        self.db = db
        self.target = dsn(db)
        self.pause_s = pause_ms / 1000.0
        self.ctx = mp.get_context("spawn")
        self.proc: Any = None

    def start(self) -> None:
        self.ready = self.ctx.Event()
        self.stop_event = self.ctx.Event()
        self.out: mp.Queue[dict[str, Any]] = self.ctx.Queue()
        self.proc = self.ctx.Process(
            target=_writer_main,
            args=(
                self.db,
                self.target,
                self.customers,
                self.orders,
                self.pause_s,
                self.ready,
                self.stop_event,
                self.out,
            ),
            daemon=True,
        )
        self.proc.start()
        if not self.ready.wait(60):
            raise RuntimeError("the writer process did not start")

    def stop(self) -> WriterResult:
        self.stop_event.set()
        result = WriterResult(**self.out.get(timeout=120))
        self.proc.join(timeout=30)
        self.proc = None
        return result

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=10)

    def measure_idle(self, seconds: float) -> WriterResult:
        settle()
        self.start()
        time.sleep(seconds)
        return self.stop()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


# --- probes: transactions, statements, RSS, lock waits --------------------------------


_VERB = re.compile(r"^\s*(\w+)")
_FROM = re.compile(r"\bFROM\s+(?:\w+\.)?\"?(\w+)", re.IGNORECASE)
_CTE_WRITE = re.compile(
    r"^WITH\s+\w+\s+AS\s*\(\s*(DELETE\s+FROM|UPDATE)\s+(?:\w+\.)?\"?(\w+)", re.IGNORECASE
)
_COUNT_FROM = re.compile(r"count\(\*\)(?:\s+AS\s+\w+)?\s+FROM\s+(?:\w+\.)?\"?(\w+)", re.IGNORECASE)


def statement_kind(sql: str) -> str:
    """A short name of a statement: verb, table, and how rows are found (no values)."""
    text = " ".join(sql.split())
    upper = text.upper()
    m = _VERB.match(text)
    verb = m.group(1).upper() if m else "?"
    if "PG_CATALOG" in upper or re.search(r"\bFROM pg_\w+", text):
        return "catalog queries (reflect)"
    if "ADVISORY" in upper:
        return "per-subject advisory lock"
    cte = _CTE_WRITE.match(text)
    if cte:
        # What a removed batch's keys come back as: one row of aggregates.
        return f"{' '.join(cte.group(1).upper().split())} {cte.group(2)} (keys aggregated)"
    count = _COUNT_FROM.search(text)
    if count:
        return f"SELECT count(*) FROM {count.group(1)} (preflight/verify)"
    f = _FROM.search(text)
    table = f.group(1) if f else ""
    if verb == "SELECT" and table:
        how = "by key list" if "ANY (" in upper or "ANY(" in upper else "by tenant_id"
        if " > " in text and "ORDER BY" in upper:
            how += ", keyset"
        lock = " FOR UPDATE" if "FOR UPDATE" in upper else ""
        return f"SELECT {table} {how}{lock}"
    if verb == "DELETE":
        return f"DELETE FROM {table}"
    if verb == "SET":
        return "SET LOCAL lock_timeout"
    return f"{verb} {table}".strip()


@dataclass
class _OpenTx:
    started: float
    kinds: list[str] = field(default_factory=list)
    wrote: bool = False


@dataclass
class TxRecord:
    started: float
    seconds: float
    kinds: tuple[str, ...]
    wrote: bool
    #: Begin until the COMMIT returned.
    with_commit: float | None = None


@dataclass
class StatementStats:
    count: int = 0
    seconds: float = 0.0
    rows: int = 0


class EngineProbe:
    """Times every transaction and statement run through ``engine``.

    Transactions: from the ``begin`` to the ``commit``/``rollback`` engine event (which
    fires just before the COMMIT is sent); the COMMIT round trip itself (a WAL flush) is
    timed by wrapping this engine's ``dialect.do_commit`` and added as ``with_commit``.
    Autocommit connections (Eraser's per-subject advisory lock) are not transactions
    and are left out of the transaction figures.
    """

    def __init__(self, engine: Engine) -> None:
        self.open: dict[Connection, _OpenTx] = {}
        self.transactions: list[TxRecord] = []
        self.statements: dict[str, StatementStats] = {}
        self.commit_seconds = 0.0
        self.commits = 0
        self._kinds: dict[str, str] = {}
        self._committing: TxRecord | None = None
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        do_commit = engine.dialect.do_commit

        def timed_commit(dbapi_connection: Any) -> None:
            t0 = time.perf_counter()
            do_commit(dbapi_connection)
            now = time.perf_counter()
            self.commit_seconds += now - t0
            self.commits += 1
            rec, self._committing = self._committing, None
            if rec is not None:
                rec.with_commit = now - rec.started

        engine.dialect.do_commit = timed_commit  # type: ignore[method-assign]

    def _begin(self, conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        self.open[conn] = _OpenTx(time.perf_counter())

    def _end(self, conn: Connection) -> None:
        tx = self.open.pop(conn, None)
        if tx is None:
            return
        rec = TxRecord(tx.started, time.perf_counter() - tx.started, tuple(tx.kinds), tx.wrote)
        self.transactions.append(rec)
        self._committing = rec

    def _before(
        self,
        conn: Connection,
        _cursor: Any,
        statement: str,
        _params: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        _params: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        elapsed = time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
        kind = self._kinds.get(statement)
        if kind is None:
            kind = self._kinds[statement] = statement_kind(statement)
        stats = self.statements.setdefault(kind, StatementStats())
        stats.count += 1
        stats.seconds += elapsed
        stats.rows += max(0, cursor.rowcount or 0)
        tx = self.open.get(conn)
        if tx is not None:
            tx.kinds.append(kind)
            if kind.startswith(("DELETE", "UPDATE")) or kind.endswith("FOR UPDATE"):
                tx.wrote = True

    def reset(self) -> None:
        """Forget what was seen so far (reflect + plan), to account for erase() alone."""
        self.transactions.clear()
        self.statements.clear()
        self.commit_seconds = 0.0
        self.commits = 0

    def longest(self, write_only: bool = False) -> TxRecord | None:
        txs = [t for t in self.transactions if t.wrote or not write_only]
        return max(txs, key=lambda t: t.seconds, default=None)

    def longest_with_commit(self, write_only: bool = True) -> TxRecord | None:
        txs = [t for t in self.transactions if t.wrote or not write_only]
        return max(txs, key=lambda t: t.with_commit or t.seconds, default=None)


class Monitor:
    """Samples this process's RSS every 20 ms (a cheap read of /proc)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.proc = psutil.Process()
        self.peak_rss = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.0f} MB"


# --- runs ---------------------------------------------------------------------------


@dataclass
class EraserRun:
    report: ErasureReport
    erase_seconds: float
    wall_seconds: float
    warnings: list[str]
    probe: EngineProbe
    monitor: Monitor
    max_gap: float
    #: The longest batch the server-side loop ran (its first statement until its COMMIT
    #: returned, timed in the server), and how many progress reports came from the loop.
    server_longest: float
    server_reports: int
    #: CPU time of this process during erase() (Python, SQLAlchemy, the driver).
    cpu_seconds: float
    writer: WriterResult | None = None
    #: ``time.monotonic()`` when reflection began, the erasure began and it ended.
    marks: dict[str, float] = field(default_factory=dict)
    #: Bytes of WAL the server wrote during erase().
    wal_bytes: int = 0

    @property
    def rate(self) -> float:
        return self.report.total_rows / self.erase_seconds

    @property
    def wall_rate(self) -> float:
        return self.report.total_rows / self.wall_seconds


class ProgressProbe:
    """The progress callback: the longest gap between two callbacks, and a heartbeat."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.server_longest = 0.0
        self.server_reports = 0
        self.next_note = time.monotonic() + 15.0

    def __call__(self, p: Progress) -> None:
        if p.server_batch_seconds:
            self.server_reports += 1
            self.server_longest = max(self.server_longest, p.server_batch_seconds)
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        if time.monotonic() >= self.next_note:
            self.next_note = time.monotonic() + 15.0
            rate = p.total_rows / p.elapsed_seconds if p.elapsed_seconds else 0.0
            sys.stderr.write(
                f"  [{self.label}] {p.total_rows:,} rows, {rate:,.0f} rows/s, at {p.table}\n"
            )


def run_eraser(
    db: str,
    tenant: int,
    batch_size: int,
    label: str,
    writer: ConcurrentWriter | None = None,
    fk_checks: str = "auto",
    server_batches: bool = True,
) -> EraserRun:
    engine = create_engine(db_url(db))
    probe = EngineProbe(engine)
    progress = ProgressProbe(label)
    settle()
    wal0 = wal_position()
    try:
        with Monitor() as monitor:
            if writer is not None:
                writer.start()
            try:
                wall0 = time.perf_counter()
                marks = {"reflect": time.monotonic()}
                plan = build_plan(reflect(engine), list(SUBJECT_COLUMNS))
                marks["erase"] = time.monotonic()
                probe.reset()
                t0 = time.perf_counter()
                cpu0 = time.process_time()
                progress.last = t0
                options = ExecutionOptions(
                    batch_size=batch_size, fk_checks=fk_checks, server_batches=server_batches
                )
                report = erase(engine, plan, tenant, options, progress)
                t1 = time.perf_counter()
                marks["end"] = time.monotonic()
                cpu = time.process_time() - cpu0
            finally:
                result = writer.stop() if writer is not None else None
    finally:
        engine.dispose()
    wal = wal_position() - wal0
    return EraserRun(
        report=report,
        erase_seconds=t1 - t0,
        wall_seconds=t1 - wall0,
        warnings=list(plan.warnings),
        probe=probe,
        monitor=monitor,
        max_gap=progress.max_gap,
        server_longest=progress.server_longest,
        server_reports=progress.server_reports,
        cpu_seconds=cpu,
        writer=result,
        marks=marks,
        wal_bytes=wal,
    )


@dataclass
class NativeRun:
    rows: int
    seconds: float
    left: int
    monitor: Monitor
    writer: WriterResult | None
    #: ``time.monotonic()`` when the DELETE began and when its COMMIT returned.
    marks: dict[str, float] = field(default_factory=dict)
    #: Bytes of WAL the server wrote during the DELETE and its COMMIT.
    wal_bytes: int = 0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def run_native(db: str, tenant: int, writer: ConcurrentWriter | None = None) -> NativeRun:
    """``DELETE FROM tenants WHERE id = ...`` with every foreign key ON DELETE CASCADE."""
    engine = create_engine(db_url(db))
    try:
        rows = rows_of(tenant_counts(engine), tenant)
        settle()
        wal0 = wal_position()
        with Monitor() as monitor:
            if writer is not None:
                writer.start()
            try:
                t0 = time.perf_counter()
                marks = {"erase": time.monotonic()}
                with engine.begin() as conn:
                    conn.execute(sa.text("DELETE FROM tenants WHERE id = :t"), {"t": tenant})
                seconds = time.perf_counter() - t0
                marks["end"] = time.monotonic()
            finally:
                result = writer.stop() if writer is not None else None
        wal = wal_position() - wal0
        left = rows_of(tenant_counts(engine), tenant)
    finally:
        engine.dispose()
    return NativeRun(rows, seconds, left, monitor, result, marks, wal)


#: What a careful engineer would hand-write for this one schema, inside the database: a
#: batched, child-first delete loop with a COMMIT per batch and no client round trips.
HAND_LOOP = """
CREATE PROCEDURE erase_tenant(t bigint, n int) LANGUAGE plpgsql AS $$
DECLARE ids bigint[]; last bigint;
BEGIN
  LOOP
    DELETE FROM events WHERE id = ANY(ARRAY(
      SELECT id FROM events WHERE tenant_id = t ORDER BY id LIMIT n));
    EXIT WHEN NOT FOUND; COMMIT;
  END LOOP;
  last := 0;
  LOOP
    ids := ARRAY(SELECT id FROM invoices WHERE tenant_id = t AND id > last ORDER BY id LIMIT n);
    EXIT WHEN cardinality(ids) = 0;
    DELETE FROM invoice_lines WHERE invoice_id = ANY(ids);
    DELETE FROM invoices WHERE id = ANY(ids); last := ids[cardinality(ids)]; COMMIT;
  END LOOP;
  last := 0;
  LOOP
    ids := ARRAY(SELECT id FROM orders WHERE tenant_id = t AND id > last ORDER BY id LIMIT n);
    EXIT WHEN cardinality(ids) = 0;
    DELETE FROM order_items WHERE order_id = ANY(ids);
    DELETE FROM payments WHERE order_id = ANY(ids);
    DELETE FROM orders WHERE id = ANY(ids); last := ids[cardinality(ids)]; COMMIT;
  END LOOP;
  last := 0;
  LOOP
    ids := ARRAY(SELECT id FROM products WHERE tenant_id = t AND id > last ORDER BY id LIMIT n);
    EXIT WHEN cardinality(ids) = 0;
    DELETE FROM product_variants WHERE product_id = ANY(ids);
    DELETE FROM products WHERE id = ANY(ids); last := ids[cardinality(ids)]; COMMIT;
  END LOOP;
  last := 0;
  LOOP
    ids := ARRAY(SELECT id FROM customers WHERE tenant_id = t AND id > last ORDER BY id LIMIT n);
    EXIT WHEN cardinality(ids) = 0;
    DELETE FROM customers WHERE id = ANY(ids); last := ids[cardinality(ids)]; COMMIT;
  END LOOP;
  DELETE FROM tenants WHERE id = t; COMMIT;
END $$;
"""


def run_hand_loop(db: str, tenant: int, batch_size: int) -> NativeRun:
    """The hand-written PL/pgSQL loop above, on plain (NO ACTION) foreign keys, with
    asynchronous commits like Eraser's batches."""
    engine = create_engine(db_url(db), isolation_level="AUTOCOMMIT")
    try:
        rows = rows_of(tenant_counts(engine), tenant)
        with engine.connect() as conn, Monitor() as monitor:
            conn.exec_driver_sql(HAND_LOOP)
            conn.exec_driver_sql("SET synchronous_commit = off")
            t0 = time.perf_counter()
            conn.execute(sa.text("CALL erase_tenant(:t, :n)"), {"t": tenant, "n": batch_size})
            seconds = time.perf_counter() - t0
        left = rows_of(tenant_counts(engine), tenant)
    finally:
        engine.dispose()
    return NativeRun(rows, seconds, left, monitor, None)


# --- output -------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_profile(run: EraserRun, top: int = 8) -> None:
    probe = run.probe
    stats = sorted(probe.statements.items(), key=lambda kv: -kv[1].seconds)
    in_sql = sum(st.seconds for _, st in stats)
    count = sum(st.count for _, st in stats)
    rest = run.erase_seconds - in_sql - probe.commit_seconds
    print(
        f"  where erase()'s {run.erase_seconds:.1f} s went: {count:,} statements"
        f" {in_sql:.1f} s ({in_sql / run.erase_seconds:.0%}), {probe.commits:,} COMMITs"
        f" {probe.commit_seconds:.1f} s ({probe.commit_seconds / run.erase_seconds:.0%}),"
        f" the rest {rest:.1f} s ({rest / run.erase_seconds:.0%}) in Python;"
        f" process CPU {run.cpu_seconds:.1f} s"
    )
    print("    seconds   count    per stmt       rows  statement (top by time)")
    for kind, st in stats[:top]:
        per = st.seconds / st.count * 1000 if st.count else 0.0
        print(f"    {st.seconds:7.2f} {st.count:7,} {per:8.2f} ms {st.rows:>10,}  {kind}")


def print_transactions(run: EraserRun) -> None:
    probe = run.probe
    txs = probe.transactions
    writes = [t.with_commit or t.seconds for t in txs if t.wrote]
    print(
        f"  transactions: {len(txs):,}, {len(writes):,} of them row-locking; those took"
        f" p50 {percentile(writes, 50) * 1000:.1f} ms, p99 {percentile(writes, 99) * 1000:.1f}"
        " ms (BEGIN to COMMIT returned)"
    )
    longest_w = probe.longest_with_commit()
    if longest_w is not None:
        kinds = ", ".join(dict.fromkeys(k for k in longest_w.kinds if not k.startswith("SET")))
        with_commit = (longest_w.with_commit or longest_w.seconds) * 1000
        print(
            f"  longest row-locking transaction: {with_commit:.1f} ms from BEGIN until the"
            f" COMMIT returned ({longest_w.seconds * 1000:.1f} ms between the begin and commit"
            f" events) [{kinds}]"
        )
    if run.server_reports:
        print(
            f"  batches run in the server (PL/pgSQL loop, a COMMIT per batch): longest"
            f" {run.server_longest * 1000:.1f} ms from its first statement until its COMMIT"
            f" returned, timed in the server; {run.server_reports:,} progress reports from it"
        )
    longest = probe.longest()
    if longest is not None and not longest.wrote:
        kinds = ", ".join(dict.fromkeys(longest.kinds))
        if len(kinds) > 150:
            kinds = kinds[:150] + "..."
        print(
            f"  longest transaction of any kind: {longest.seconds * 1000:.1f} ms, read-only,"
            f" takes no row locks [{kinds}]"
        )
    print(f"  longest gap between two progress callbacks: {run.max_gap * 1000:.1f} ms")


def print_writer(
    label: str, idle: WriterResult, busy: WriterResult, marks: dict[str, float]
) -> bool:
    ratio = busy.pct(99) / idle.pct(99)
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(busy.errors.items())) or "none"
    print(
        f"  concurrent single-row writes to other tenants ({label}):"
        f" p99 {busy.pct(99):.2f} ms vs {idle.pct(99):.2f} ms idle = {ratio:.1f}x"
        f" (target < 3x: {verdict(ratio < 3)})"
    )
    print(
        f"    idle: {idle.ops:,} ops in {idle.seconds:.1f} s, p50 {idle.pct(50):.2f} ms,"
        f" max {max(idle.latencies_ms, default=0):.1f} ms;"
        f" during: {busy.ops:,} ops, p50 {busy.pct(50):.2f} ms, max"
        f" {max(busy.latencies_ms, default=0):.1f} ms, {busy.slow(100):,} over 100 ms"
    )
    print(
        f"    errors: {errors}; pg_stat_activity every 20 ms: writer waiting on a lock in"
        f" {busy.writer_lock_waits} of {busy.lock_samples} samples, Eraser in"
        f" {busy.eraser_lock_waits}"
    )
    if idle.run_queue_ms is not None and busy.run_queue_ms is not None:
        print(
            f"    waiting for a CPU (writer + its backend, run queue): {busy.run_queue_ms:.0f} ms"
            f" in {busy.seconds:.1f} s during vs {idle.run_queue_ms:.0f} ms in"
            f" {idle.seconds:.1f} s idle"
        )
    if idle.cpu_ms is not None and busy.cpu_ms is not None and idle.ops and busy.ops:
        print(
            f"    on a CPU (writer + its backend): {busy.cpu_ms / busy.ops * 1000:.0f} µs per"
            f" write during vs {idle.cpu_ms / idle.ops * 1000:.0f} µs idle"
        )
    print(f"    slowest writes: {slowest(busy, marks)}")
    return ratio < 3


def slowest(result: WriterResult, marks: dict[str, float], n: int = 6) -> str:
    """The ``n`` slowest writes: how long, what (U/O/I), and when, in seconds from the
    start of the erasure proper (``marks``: reflect, erase, end)."""
    zero = marks.get("erase", 0.0)
    order = sorted(range(result.ops), key=lambda i: result.latencies_ms[i], reverse=True)
    when = ", ".join(f"{k} {t - zero:+.2f} s" for k, t in marks.items() if k != "erase")
    writes = (
        f"{result.latencies_ms[i]:.1f} ms {result.kinds[i]} at {result.started[i] - zero:+.2f} s"
        for i in order[:n]
    )
    return f"{', '.join(writes)} (from the erasure's start; {when})"


def erase_with_writer(
    db: str, args: argparse.Namespace, writers: list[ConcurrentWriter], label: str
) -> tuple[WriterResult, EraserRun, Counts, Counts]:
    """The writer's idle window on ``db``, then Eraser's erasure of the big tenant with
    the writer running; with every tenant's row counts before and after it."""
    writer = ConcurrentWriter(db, args.writer_pause_ms)
    writers.append(writer)
    idle = writer.measure_idle(args.idle_seconds)
    engine = create_engine(db_url(db))
    before = tenant_counts(engine)
    engine.dispose()
    run = run_eraser(db, BIG_TENANT, args.batch_size, label, writer)
    engine = create_engine(db_url(db))
    after = tenant_counts(engine)
    engine.dispose()
    return idle, run, before, after


def cascade_with_writer(
    db: str, args: argparse.Namespace, writers: list[ConcurrentWriter]
) -> tuple[WriterResult, NativeRun]:
    """The writer's idle window on ``db``, then the cascading DELETE of the big tenant
    with the writer running."""
    writer = ConcurrentWriter(db, args.writer_pause_ms)
    writers.append(writer)
    idle = writer.measure_idle(args.idle_seconds)
    return idle, run_native(db, BIG_TENANT, writer)


@dataclass
class Trial:
    """One erasure of the big tenant by Eraser and one by the native cascade, each on a
    fresh copy, with the writer's idle window on that copy just before it."""

    eraser_idle: WriterResult
    eraser: WriterResult
    eraser_rate: float
    native_idle: WriterResult
    native: WriterResult
    native_rate: float
    #: What the Eraser run's verification found wrong ('' when nothing).
    problems: str = ""


def run_trial(
    admin: Engine,
    seeds: tuple[str, str],
    k: int,
    args: argparse.Namespace,
    created: list[str],
    writers: list[ConcurrentWriter],
) -> Trial:
    """Erase the big tenant from fresh copies of ``seeds`` (plain, cascading), Eraser
    first in even trials and the cascade first in odd ones."""
    plain, cascade = f"{seeds[0]}_{k}", f"{seeds[1]}_{k}"
    for name, seed in ((plain, seeds[0]), (cascade, seeds[1])):
        created.append(name)
        create_database(admin, name, template=seed)

    def by_eraser() -> tuple[WriterResult, WriterResult, float, str]:
        idle, run, before, after = erase_with_writer(plain, args, writers, f"erasure {k + 1}")
        assert run.writer is not None
        problems = others_unchanged(before, after, BIG_TENANT, run.writer.inserts)
        if not run.report.verified or run.report.total_rows != rows_of(before, BIG_TENANT):
            problems = f"{problems}; not verified or not every row counted".lstrip("; ")
        return idle, run.writer, run.rate, problems

    def by_cascade() -> tuple[WriterResult, WriterResult, float]:
        idle, native = cascade_with_writer(cascade, args, writers)
        assert native.writer is not None
        return idle, native.writer, native.rate

    if k % 2:
        native = by_cascade()
        eraser = by_eraser()
    else:
        eraser = by_eraser()
        native = by_cascade()
    for name in (plain, cascade):
        drop_database(admin, name)
        created.remove(name)
    return Trial(eraser[0], eraser[1], eraser[2], *native, problems=eraser[3])


def pooled_p99(results: Sequence[WriterResult]) -> tuple[float, int]:
    """The p99 of every write in ``results`` together, and how many writes that is."""
    latencies = [x for r in results for x in r.latencies_ms]
    return percentile(latencies, 99), len(latencies)


def print_trials(trials: Sequence[Trial]) -> tuple[float, bool]:
    """Print the figures of every erasure of the big tenant, pooled; return Eraser's
    throughput against the cascade's and whether the writer's pooled p99 stayed under
    3x its pooled idle p99 with no lock waits and no errors."""
    print(
        f"  over {len(trials)} erasures each, on fresh identical copies (alternating which"
        " goes first; the writer's idle window on each copy just before its erasure):"
    )
    sides = {
        "eraser": (
            [t.eraser for t in trials],
            [t.eraser_idle for t in trials],
            [t.eraser_rate for t in trials],
        ),
        "native cascade": (
            [t.native for t in trials],
            [t.native_idle for t in trials],
            [t.native_rate for t in trials],
        ),
    }
    pooled: dict[str, tuple[float, float]] = {}
    for label, (busy_runs, idle_runs, rates) in sides.items():
        busy, n = pooled_p99(busy_runs)
        still, n_idle = pooled_p99(idle_runs)
        pooled[label] = (busy, still)
        per = ", ".join(
            f"{b.pct(99) / i.pct(99):.1f}x" for b, i in zip(busy_runs, idle_runs, strict=True)
        )
        waited = [r.run_queue_ms for r in busy_runs if r.run_queue_ms is not None]
        queue = (
            f"; waiting for a CPU {sum(waited) / sum(r.seconds for r in busy_runs):.0f} ms/s"
            if len(waited) == len(busy_runs)
            else ""
        )
        print(
            f"    {label}: rows/s {', '.join(f'{r:,.0f}' for r in rates)}; write p99 per"
            f" erasure {per}; pooled p99 {busy:.2f} ms over {n:,} writes vs {still:.2f} ms"
            f" over {n_idle:,} idle = {busy / still:.2f}x{queue}"
        )
    busy, still = pooled["eraser"]
    waits = sum(t.eraser.writer_lock_waits for t in trials)
    samples = sum(t.eraser.lock_samples for t in trials)
    errors = sum(sum(t.eraser.errors.values()) for t in trials)
    # Rates of the same rows: the harmonic means, i.e. total rows over total seconds.
    ratio = sum(1 / t.native_rate for t in trials) / sum(1 / t.eraser_rate for t in trials)
    print(
        f"    eraser / native: throughput {ratio:.2f}, pooled write p99"
        f" {busy / pooled['native cascade'][0]:.2f}; during Eraser the writer waited on a lock"
        f" in {waits} of {samples} samples and had {errors} errors"
    )
    return ratio, busy / still < 3 and waits == 0 and errors == 0


# --- main ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rows", type=int, help="rows of the erased tenant (1,000,000)")
    parser.add_argument("--other-rows", type=int, help="rows of each of 18 other tenants")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=ExecutionOptions().batch_size,
        help="Eraser's batch size (the engine default)",
    )
    parser.add_argument("--quick", action="store_true", help="a 100k-row tenant, for a try")
    parser.add_argument(
        "--noindex-rows", type=int, help="tenant size for the missing-index run (0: skip it)"
    )
    parser.add_argument("--idle-seconds", type=float, help="idle writer baseline duration")
    parser.add_argument(
        "--trials",
        type=int,
        help="erasures of the big tenant by Eraser and by the cascade, each on a fresh copy"
        " (the writer's p99 is pooled over them; 5, or 3 with --quick)",
    )
    parser.add_argument(
        "--writer-pause-ms", type=float, default=2.0, help="pause between the writer's ops"
    )
    args = parser.parse_args(argv)
    defaults = (
        {
            "rows": 100_000,
            "other_rows": 5_000,
            "noindex_rows": 10_000,
            "idle_seconds": 3.0,
            "trials": 3,
        }
        if args.quick
        else {
            "rows": 1_000_000,
            "other_rows": 50_000,
            "noindex_rows": 20_000,
            "idle_seconds": 5.0,
            "trials": 5,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


def server_wal_compression(admin: Engine) -> str:
    with admin.connect() as conn:
        return str(conn.exec_driver_sql("SHOW wal_compression").scalar_one())


def load_average() -> str:
    """Other work on the machine skews every figure here: say how busy it was."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    prefix = f"eraser_bench_{os.getpid()}"
    plain, cascade, noindex = f"{prefix}_plain", f"{prefix}_cascade", f"{prefix}_noindex"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []
    writers: list[ConcurrentWriter] = []
    try:
        with admin.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar_one()
        print(
            f"Eraser benchmark: PostgreSQL {version}, Python {platform.python_version()},"
            f" {os.cpu_count()} CPUs, batch size {args.batch_size}; {load_average()}"
        )
        ok = bench(args, admin, plain, cascade, noindex, created, writers)
        print(f"\nfinished; {load_average()}")
    finally:
        for w in writers:
            w.kill()
        for name in reversed(created):
            drop_database(admin, name)
        admin.dispose()
        if created:
            print(f"dropped databases {', '.join(created)}")
    return 0 if ok else 1


def bench(
    args: argparse.Namespace,
    admin: Engine,
    plain: str,
    cascade: str,
    noindex: str,
    created: list[str],
    writers: list[ConcurrentWriter],
) -> bool:
    small_rows = max(1, args.rows // 10)
    sizes = tenant_sizes(args.rows, small_rows, args.other_rows)

    # --- setup
    t0 = time.perf_counter()
    created.append(plain)
    create_database(admin, plain)
    engine = create_engine(db_url(plain))
    load(engine, sizes)
    engine.dispose()
    t_load = time.perf_counter() - t0
    created.append(cascade)
    create_database(admin, cascade, template=plain)
    handloop = f"{plain}_hand"
    created.append(handloop)
    create_database(admin, handloop, template=plain)
    dbchecks = f"{plain}_dbchecks"
    created.append(dbchecks)
    create_database(admin, dbchecks, template=plain)
    by_client_db = f"{plain}_client"
    created.append(by_client_db)
    create_database(admin, by_client_db, template=plain)
    engine = create_engine(db_url(cascade))
    make_cascading(engine)
    engine.dispose()
    t_clone = time.perf_counter() - t0 - t_load
    for db in (plain, cascade, handloop, dbchecks, by_client_db):
        engine = create_engine(db_url(db))
        vacuum_analyze(engine)
        engine.dispose()
    t_setup = time.perf_counter() - t0
    engine = create_engine(db_url(plain))
    counts = tenant_counts(engine)
    engine.dispose()
    total = sum(sum(per.values()) for per in counts.values())
    print(
        f"setup: {total:,} rows in 10 tables, {TENANTS} tenants (erased tenant"
        f" {rows_of(counts, BIG_TENANT):,} rows, 10x smaller tenant"
        f" {rows_of(counts, SMALL_TENANT):,}, {TENANTS - 2} others ~{args.other_rows:,} each)"
    )
    print(
        f"  {t_setup:.1f} s: load + index + FKs {t_load:.1f} s, clone as ON DELETE CASCADE"
        f" copy {t_clone:.1f} s, VACUUM ANALYZE {t_setup - t_load - t_clone:.1f} s"
    )

    # --- the 10x smaller tenant first: RSS flatness, and a second ratio
    print(f"\n== 10x smaller tenant ({rows_of(counts, SMALL_TENANT):,} rows) ==")
    small = run_eraser(plain, SMALL_TENANT, args.batch_size, "eraser, small tenant")
    small_native = run_native(cascade, SMALL_TENANT)
    print(
        f"  eraser {small.report.total_rows:,} rows in {small.erase_seconds:.2f} s ="
        f" {small.rate:,.0f} rows/s; native cascade {small_native.rows:,} rows in"
        f" {small_native.seconds:.2f} s = {small_native.rate:,.0f} rows/s;"
        f" ratio {small.rate / small_native.rate:.2f}; verified={small.report.verified}"
    )
    print(f"  peak RSS during erase(): {mb(small.monitor.peak_rss)}")
    for db in (plain, cascade):
        engine = create_engine(db_url(db))
        vacuum_analyze(engine)
        engine.dispose()
    # Pristine copies of both, for the later trials of the big tenant.
    seeds = (f"{plain}_seed", f"{cascade}_seed")
    if args.trials > 1:
        for seed, source in zip(seeds, (plain, cascade), strict=True):
            created.append(seed)
            create_database(admin, seed, template=source)

    # --- the big tenant
    big_rows = rows_of(counts, BIG_TENANT)
    print(f"\n== erased tenant ({big_rows:,} rows) ==")
    idle, run, before, after = erase_with_writer(plain, args, writers, "eraser")
    assert run.writer is not None
    native_idle, native = cascade_with_writer(cascade, args, writers)
    assert native.writer is not None

    hand = run_hand_loop(handloop, BIG_TENANT, args.batch_size)
    by_db = run_eraser(
        dbchecks, BIG_TENANT, args.batch_size, "eraser, database checks", None, "database"
    )
    client_writer = ConcurrentWriter(by_client_db, args.writer_pause_ms)
    writers.append(client_writer)
    client_idle = client_writer.measure_idle(args.idle_seconds)
    by_client = run_eraser(
        by_client_db,
        BIG_TENANT,
        args.batch_size,
        "eraser, batches from the client",
        client_writer,
        server_batches=False,
    )
    assert by_client.writer is not None
    trials = [Trial(idle, run.writer, run.rate, native_idle, native.writer, native.rate)]
    for k in range(1, args.trials):
        trials.append(run_trial(admin, seeds, k, args, created, writers))
    ratio = run.rate / native.rate
    print(f"  first erasure of {args.trials}:")
    print(
        f"  eraser erase():          {run.report.total_rows:>10,} rows in"
        f" {run.erase_seconds:7.2f} s = {run.rate:>9,.0f} rows/s"
    )
    print(
        f"  eraser incl. reflect+plan:{'':>10} wall {run.wall_seconds:7.2f} s ="
        f" {run.wall_rate:>9,.0f} rows/s"
    )
    print(
        f"  native ON DELETE CASCADE:{native.rows:>10,} rows in"
        f" {native.seconds:7.2f} s = {native.rate:>9,.0f} rows/s (one transaction"
        f" holding every row lock for {native.seconds:.2f} s)"
    )
    print(
        f"  hand-written PL/pgSQL loop:{hand.rows:>8,} rows in {hand.seconds:7.2f} s ="
        f" {hand.rate:>9,.0f} rows/s (batches of {args.batch_size:,} in the server, plain"
        f" foreign keys, left {hand.left})"
    )
    print(
        f"  eraser, fk_checks=database:{by_db.report.total_rows:>8,} rows in"
        f" {by_db.erase_seconds:7.2f} s = {by_db.rate:>9,.0f} rows/s (the database's own"
        f" per-row foreign-key checks; {by_db.rate / native.rate:.2f} of native)"
    )
    print(
        f"  eraser, batches from client:{by_client.report.total_rows:>7,} rows in"
        f" {by_client.erase_seconds:7.2f} s = {by_client.rate:>9,.0f} rows/s (server_batches="
        f"False: every statement a round trip; {by_client.rate / native.rate:.2f} of native)"
    )
    print(
        f"  tables whose batches Eraser checked itself (fk_checks={'auto'}):"
        f" {len(run.report.checked_by_eraser)} of {len(run.report.tables)}"
        f" ({', '.join(t.split('.')[-1] for t in run.report.checked_by_eraser) or 'none'})"
    )
    print(
        f"  WAL written: eraser {mb(run.wal_bytes)} (full-page images compressed:"
        f" {run.report.wal_compression or 'no'}), native cascade {mb(native.wal_bytes)}"
        f" (the server's wal_compression: {server_wal_compression(admin)}),"
        f" eraser with batches from the client {mb(by_client.wal_bytes)}"
    )
    print(f"  ratio eraser / native in this erasure: {ratio:.2f}")
    print(f"  ratio eraser / hand-written loop: {run.rate / hand.rate:.2f}")
    print_transactions(run)
    print_writer("during eraser", idle, run.writer, run.marks)
    print_writer("during native cascade, for reference", native_idle, native.writer, native.marks)
    print_writer(
        "during eraser with batches from the client, for reference",
        client_idle,
        by_client.writer,
        by_client.marks,
    )
    rss_ok = run.monitor.peak_rss < 150 * 2**20
    print(
        f"  peak RSS during erase(): {mb(run.monitor.peak_rss)} for {big_rows:,} rows vs"
        f" {mb(small.monitor.peak_rss)} for {rows_of(counts, SMALL_TENANT):,} rows"
        f" (target < 150 MB: {verdict(rss_ok)}); process ru_maxrss"
        f" {mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}"
    )
    print(f"  plan warnings: {len(run.warnings)}")
    print_profile(run)
    ratio, writes_ok = print_trials(trials)
    problems = others_unchanged(before, after, BIG_TENANT, run.writer.inserts)
    exact = run.report.total_rows == big_rows
    verified = run.report.verified and not problems and exact
    for k, trial in enumerate(trials[1:], start=2):
        if trial.problems:
            print(f"  erasure {k}: {trial.problems}")
            verified = False
    print(
        f"  verification: report.verified={run.report.verified} ({run.report.passes} pass),"
        f" removed {run.report.total_rows:,} of {big_rows:,} counted beforehand,"
        f" other tenants' rows {'unchanged' if not problems else 'CHANGED: ' + problems}"
        f" (events +{run.writer.inserts:,} from the writer); native left {native.left} rows"
    )
    print(
        "  rows removed per table: "
        + ", ".join(f"{t.table.split('.')[-1]} {t.rows:,}" for t in run.report.tables)
    )

    # --- the missing index
    if args.noindex_rows > 0:
        verified = run_missing_index(args, admin, noindex, created, counts) and verified

    print(
        f"\ntargets: eraser/native {ratio:.2f} >= 0.7 {verdict(ratio >= 0.7)};"
        f" concurrent write p99 (pooled) < 3x idle {verdict(writes_ok)}; peak RSS < 150 MB"
        f" {verdict(rss_ok)}; verification {verdict(verified)}"
    )
    return verified


def run_missing_index(
    args: argparse.Namespace, admin: Engine, noindex: str, created: list[str], full: Counts
) -> bool:
    """Erase a tenant with ``order_items(order_id)`` unindexed, then a same-size one with it
    indexed; extrapolate the unindexed cost to the full-size tenant of ``full``."""
    n = args.noindex_rows
    print(
        f"\n== missing index: {NOINDEX_TABLE}(order_id) not indexed (a separate, smaller copy:"
        f" two {n:,}-row tenants and {TENANTS - 2} of {NOINDEX_OTHER_ROWS:,}; the cost grows"
        f" with orders erased x rows in {NOINDEX_TABLE}, so the full-size tenant would take"
        " far too long) =="
    )
    created.append(noindex)
    create_database(admin, noindex)
    engine = create_engine(db_url(noindex))
    third = SMALL_TENANT + 1
    sizes = tenant_sizes(n, n, NOINDEX_OTHER_ROWS)
    sizes = [TenantSize.for_rows(third, n) if s.tenant_id == third else s for s in sizes]
    load(engine, sizes)
    run_sql(engine, f"DROP INDEX {NOINDEX_INDEX}")
    vacuum_analyze(engine)
    counts = tenant_counts(engine)
    engine.dispose()
    # The database's own check scans order_items once per erased order; Eraser's own
    # checks (fk_checks=eraser) once per batch of orders.
    slow = run_eraser(noindex, BIG_TENANT, args.batch_size, "no index", None, "database")
    for warning in slow.warnings:
        print(f"  planner warning: {warning}")
    own = run_eraser(noindex, third, args.batch_size, "no index, own checks", None, "eraser")
    engine = create_engine(db_url(noindex))
    run_sql(engine, f"CREATE INDEX {NOINDEX_INDEX} ON {NOINDEX_TABLE} (order_id)")
    vacuum_analyze(engine)
    engine.dispose()
    fast = run_eraser(noindex, SMALL_TENANT, args.batch_size, "eraser, index restored")
    items = sum(counts[NOINDEX_TABLE].values())
    print(
        f"  without the index, fk_checks=database: {slow.report.total_rows:,} rows in"
        f" {slow.erase_seconds:.2f} s = {slow.rate:,.0f} rows/s (verified="
        f"{slow.report.verified}; {NOINDEX_TABLE} had {items:,} rows; one scan per order)"
    )
    print(
        f"  without the index, fk_checks=eraser:   {own.report.total_rows:,} rows in"
        f" {own.erase_seconds:.2f} s = {own.rate:,.0f} rows/s (verified={own.report.verified};"
        f" one scan per batch of {args.batch_size:,} orders)"
    )
    print(
        f"  with the index:    {fast.report.total_rows:,} rows in {fast.erase_seconds:.2f} s ="
        f" {fast.rate:,.0f} rows/s (verified={fast.report.verified}, same-size tenant)"
        f" -> {fast.rate / slow.rate:.1f}x faster than the database's checks without it"
    )
    print_profile(slow, top=3)
    # Each deleted order makes PostgreSQL's foreign-key check scan order_items once.
    deletes = slow.probe.statements.get("DELETE FROM orders", StatementStats())
    orders = counts["orders"].get(BIG_TENANT, 0)
    if deletes.seconds and orders and items:
        per_row_scanned = deletes.seconds / (orders * items)
        full_orders = full["orders"].get(BIG_TENANT, 0)
        full_items = sum(full[NOINDEX_TABLE].values())
        estimate = per_row_scanned * full_orders * full_items
        took = f"{estimate / 60:,.0f} min" if estimate >= 120 else f"{estimate:,.0f} s"
        print(
            f"  extrapolated to the full-size tenant ({full_orders:,} orders, {full_items:,}"
            f" {NOINDEX_TABLE} rows): ~{took} in DELETE FROM orders alone"
            " (PostgreSQL's FK check scans order_items once per erased order)"
        )
    return slow.report.verified and own.report.verified and fast.report.verified


if __name__ == "__main__":
    sys.exit(main())
