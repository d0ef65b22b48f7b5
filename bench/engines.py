"""Eraser against the database's own ON DELETE CASCADE on MariaDB and SQLite. Run with
``make bench`` (``python bench/engines.py``; ``--sizes 50000,100000`` ``--trials 5``
``--backends mariadb,sqlite``).

The schema is ``bench/erase.py``'s ten tables (tenants, customers, products,
product_variants, orders, order_items, payments, invoices, invoice_lines, events;
every foreign-key and tenant column indexed), built portably with SQLAlchemy and filled
from Python with the same proportions per tenant. The erased tenant holds each of
``--sizes`` rows, four other tenants a tenth of the largest each, their rows
interleaved in arrival order.

For each size a source copy is loaded once; each erasure runs on a fresh copy of it
(MariaDB: ``INSERT ... SELECT`` into a new database; SQLite: a copy of the file):
plain foreign keys for ``eraser erase`` (in process: reflect, plan, ``erase()``), ON
DELETE CASCADE for ``DELETE FROM tenants WHERE id = ...`` in one transaction. Each of
``--trials`` rounds runs both, alternating which goes first.

Printed per backend and size: seconds and rows/s (median, min-max) of both, the
ratio, Eraser's longest transaction (begin to COMMIT returned), and for MariaDB where
Eraser's time goes: round trips, locking reads (``SELECT ... FOR UPDATE``), other
reads, deletes, commits, and the rest (Python, the driver), timed with SQLAlchemy's
cursor events and a wrapped ``do_commit`` on the engine erase() is given; the engine
runs unchanged. Every erasure is verified and every other tenant's rows counted
unchanged. Databases (``eraser_bench_engines_<pid>_*``) and files are removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

MARIADB_ADMIN_URL = "mysql://root@127.0.0.1:3306/test"
SUBJECT_COLUMNS = ("tenant_id", "tenants.id")
SUBJECT = 1
OTHER_TENANTS = (2, 3, 4, 5)

#: (child, column, parent); every parent column is ``id``.
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
COLUMNS: dict[str, tuple[tuple[str, sa.types.TypeEngine[Any]], ...]] = {
    "tenants": (("id", sa.Integer()), ("name", sa.String(40))),
    "customers": (
        ("id", sa.Integer()),
        ("tenant_id", sa.Integer()),
        ("number", sa.Integer()),
        ("name", sa.String(40)),
        ("email", sa.String(80)),
    ),
    "products": (
        ("id", sa.Integer()),
        ("tenant_id", sa.Integer()),
        ("number", sa.Integer()),
        ("name", sa.String(40)),
        ("price_cents", sa.Integer()),
    ),
    "product_variants": (
        ("id", sa.Integer()),
        ("product_id", sa.Integer()),
        ("position", sa.Integer()),
        ("sku", sa.String(40)),
    ),
    "orders": (
        ("id", sa.Integer()),
        ("tenant_id", sa.Integer()),
        ("number", sa.Integer()),
        ("customer_id", sa.Integer()),
        ("status", sa.String(12)),
        ("total_cents", sa.Integer()),
    ),
    "order_items": (
        ("id", sa.Integer()),
        ("order_id", sa.Integer()),
        ("variant_id", sa.Integer()),
        ("quantity", sa.Integer()),
    ),
    "payments": (
        ("id", sa.Integer()),
        ("order_id", sa.Integer()),
        ("amount_cents", sa.Integer()),
        ("method", sa.String(12)),
    ),
    "invoices": (
        ("id", sa.Integer()),
        ("tenant_id", sa.Integer()),
        ("number", sa.Integer()),
        ("customer_id", sa.Integer()),
        ("total_cents", sa.Integer()),
    ),
    "invoice_lines": (
        ("id", sa.Integer()),
        ("invoice_id", sa.Integer()),
        ("description", sa.String(40)),
        ("amount_cents", sa.Integer()),
    ),
    "events": (
        ("id", sa.Integer()),
        ("tenant_id", sa.Integer()),
        ("customer_id", sa.Integer()),
        ("kind", sa.String(12)),
        ("payload", sa.Text()),
    ),
}
TABLES = tuple(COLUMNS)
#: Rows of every table per tenant, for the check that other tenants are untouched.
BY_TENANT = {
    "tenants": "SELECT id, 1 FROM tenants",
    "product_variants": "SELECT p.tenant_id, count(*) FROM product_variants x"
    " JOIN products p ON p.id = x.product_id GROUP BY p.tenant_id",
    "order_items": "SELECT o.tenant_id, count(*) FROM order_items x"
    " JOIN orders o ON o.id = x.order_id GROUP BY o.tenant_id",
    "payments": "SELECT o.tenant_id, count(*) FROM payments x"
    " JOIN orders o ON o.id = x.order_id GROUP BY o.tenant_id",
    "invoice_lines": "SELECT i.tenant_id, count(*) FROM invoice_lines x"
    " JOIN invoices i ON i.id = x.invoice_id GROUP BY i.tenant_id",
}


def metadata(cascade: bool) -> sa.MetaData:
    """The ten tables; every foreign key ON DELETE CASCADE with ``cascade``."""
    meta = sa.MetaData()
    refs = {(child, col): parent for child, col, parent in FOREIGN_KEYS}
    for name, cols in COLUMNS.items():
        columns = []
        for col, type_ in cols:
            parent = refs.get((name, col))
            args: list[Any] = []
            if parent is not None:
                args.append(sa.ForeignKey(f"{parent}.id", ondelete="CASCADE" if cascade else None))
            nullable = name == "events" and col == "customer_id"
            columns.append(
                sa.Column(
                    col,
                    type_,
                    *args,
                    primary_key=col == "id",
                    autoincrement=False,
                    nullable=nullable,
                    index=parent is not None,
                )
            )
        sa.Table(name, meta, *columns)
    return meta


# --- data -----------------------------------------------------------------------------


@dataclass
class Ids:
    next: dict[str, int] = field(default_factory=dict)

    def take(self, table: str) -> int:
        self.next[table] = self.next.get(table, 0) + 1
        return self.next[table]


def generate(sizes: dict[int, int]) -> dict[str, list[dict[str, Any]]]:
    """Rows of every table for tenants of ``sizes`` rows each (about: bench/erase.py's
    proportions), each table's rows interleaved across tenants in arrival order."""
    ids = Ids()
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}

    def interleaved(share: float) -> Iterator[tuple[int, int, int]]:
        counts = {t: max(1, round(n * share)) for t, n in sizes.items()}
        order = sorted((g / counts[t], t, g) for t in sizes for g in range(1, counts[t] + 1))
        for _, t, g in order:
            yield t, g, counts[t]

    rows["tenants"] = [{"id": t, "name": f"Tenant {t}"} for t in sorted(sizes)]
    customers: dict[int, list[int]] = {t: [] for t in sizes}
    for t, g, _ in interleaved(0.05):
        cid = ids.take("customers")
        customers[t].append(cid)
        rows["customers"].append(
            {
                "id": cid,
                "tenant_id": t,
                "number": g,
                "name": f"Customer {g}",
                "email": f"c{g}@t{t}.example.com",
            }
        )
    variants: dict[int, list[int]] = {t: [] for t in sizes}
    for t, g, _ in interleaved(0.01):
        pid = ids.take("products")
        rows["products"].append(
            {
                "id": pid,
                "tenant_id": t,
                "number": g,
                "name": f"P {g}",
                "price_cents": 100 + g * 7919 % 99900,
            }
        )
        for v in (1, 2, 3):
            vid = ids.take("product_variants")
            variants[t].append(vid)
            rows["product_variants"].append(
                {"id": vid, "product_id": pid, "position": v, "sku": f"SKU-{pid}-{v}"}
            )
    for t, g, _ in interleaved(0.12):
        oid = ids.take("orders")
        cs, vs = customers[t], variants[t]
        rows["orders"].append(
            {
                "id": oid,
                "tenant_id": t,
                "number": g,
                "customer_id": cs[g * 7919 % len(cs)],
                "status": "paid",
                "total_cents": g * 7919 % 100000,
            }
        )
        for k in range(1, 3 + g % 2):
            rows["order_items"].append(
                {
                    "id": ids.take("order_items"),
                    "order_id": oid,
                    "variant_id": vs[(g * 31 + k) % len(vs)],
                    "quantity": k,
                }
            )
        rows["payments"].append(
            {"id": ids.take("payments"), "order_id": oid, "amount_cents": g, "method": "card"}
        )
    for t, g, _ in interleaved(0.05):
        iid = ids.take("invoices")
        cs = customers[t]
        rows["invoices"].append(
            {
                "id": iid,
                "tenant_id": t,
                "number": g,
                "customer_id": cs[g * 104729 % len(cs)],
                "total_cents": g,
            }
        )
        for k in range(1, 3 + (g % 5 < 2)):
            rows["invoice_lines"].append(
                {
                    "id": ids.take("invoice_lines"),
                    "invoice_id": iid,
                    "description": f"Line {k}",
                    "amount_cents": k,
                }
            )
    for t, g, _ in interleaved(0.20):
        cs = customers[t]
        rows["events"].append(
            {
                "id": ids.take("events"),
                "tenant_id": t,
                "customer_id": None if g % 10 == 0 else cs[g * 131 % len(cs)],
                "kind": "view",
                "payload": f'{{"seq": {g}}}',
            }
        )
    return rows


def load(engine: Engine, meta: sa.MetaData, rows: dict[str, list[dict[str, Any]]]) -> None:
    meta.create_all(engine)
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            data = rows[table.name]
            for i in range(0, len(data), 5000):
                conn.execute(table.insert(), data[i : i + 5000])


def by_tenant(engine: Engine) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    with engine.connect() as conn:
        for table in TABLES:
            sql = BY_TENANT.get(
                table, f"SELECT tenant_id, count(*) FROM {table} GROUP BY tenant_id"
            )
            for tenant, n in conn.exec_driver_sql(sql):
                found[(table, int(tenant))] = int(n)
    return found


# --- backends -------------------------------------------------------------------------


class Backend:
    name = ""

    def prepare(self, size: int, rows: dict[str, list[dict[str, Any]]]) -> None:
        raise NotImplementedError

    def copy(self, cascade: bool) -> Engine:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError


class MariaDB(Backend):
    name = "mariadb"

    def __init__(self) -> None:
        self.prefix = f"eraser_bench_engines_{os.getpid()}"
        self.admin = create_engine(MARIADB_ADMIN_URL)
        self.names: set[str] = set()

    def url(self, name: str) -> sa.URL:
        return sa.make_url(MARIADB_ADMIN_URL).set(database=name)

    def _create(self, name: str) -> Engine:
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        self.names.add(name)
        return create_engine(self.url(name))

    def prepare(self, size: int, rows: dict[str, list[dict[str, Any]]]) -> None:
        engine = self._create(f"{self.prefix}_src")
        try:
            load(engine, metadata(False), rows)
        finally:
            engine.dispose()

    def copy(self, cascade: bool) -> Engine:
        name = f"{self.prefix}_{'cascade' if cascade else 'eraser'}"
        engine = self._create(name)
        meta = metadata(cascade)
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            for table in meta.sorted_tables:
                conn.exec_driver_sql(
                    f"INSERT INTO `{name}`.`{table.name}`"
                    f" SELECT * FROM `{self.prefix}_src`.`{table.name}`"
                )
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 1")
            for table in meta.sorted_tables:
                conn.exec_driver_sql(f"ANALYZE TABLE `{table.name}`")
        return engine

    def cleanup(self) -> None:
        with self.admin.begin() as conn:
            for name in sorted(self.names):
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        self.admin.dispose()


class SQLite(Backend):
    name = "sqlite"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="eraser-bench-engines-"))

    def prepare(self, size: int, rows: dict[str, list[dict[str, Any]]]) -> None:
        for cascade in (False, True):
            path = self.dir / f"src-{int(cascade)}.db"
            path.unlink(missing_ok=True)
            engine = create_engine(f"sqlite:///{path}")
            try:
                load(engine, metadata(cascade), rows)
            finally:
                engine.dispose()

    def copy(self, cascade: bool) -> Engine:
        target = self.dir / f"run-{int(cascade)}.db"
        shutil.copyfile(self.dir / f"src-{int(cascade)}.db", target)
        engine = create_engine(f"sqlite:///{target}")

        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys = ON")  # the cascade needs it

        return engine

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the probe ------------------------------------------------------------------------


@dataclass
class Kind:
    count: int = 0
    seconds: float = 0.0
    #: A round trip to the server (not time spent in this process).
    trip: bool = True


class Probe:
    """Times every statement, COMMIT and transaction that goes through ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.kinds: dict[str, Kind] = {}
        self.longest = 0.0
        self._begun: dict[Connection, float] = {}
        self._ending: float | None = None
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        event.listen(engine, "before_execute", self._before_execute)
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        do_commit = engine.dialect.do_commit

        def timed_commit(dbapi_connection: Any) -> None:
            t0 = time.perf_counter()
            do_commit(dbapi_connection)
            now = time.perf_counter()
            self._add("commits", now - t0)
            if self._ending is not None:
                self.longest = max(self.longest, now - self._ending)
                self._ending = None

        engine.dialect.do_commit = timed_commit  # type: ignore[method-assign]
        do_rollback = engine.dialect.do_rollback

        def timed_rollback(dbapi_connection: Any) -> None:
            t0 = time.perf_counter()
            do_rollback(dbapi_connection)
            self._add("rollbacks (read transactions, pool resets)", time.perf_counter() - t0)

        engine.dialect.do_rollback = timed_rollback  # type: ignore[method-assign]

    def reset(self) -> None:
        self.kinds.clear()
        self.longest = 0.0

    def _add(self, kind: str, seconds: float, trip: bool = True) -> None:
        found = self.kinds.setdefault(kind, Kind(trip=trip))
        found.count += 1
        found.seconds += seconds

    def _begin(self, conn: Connection) -> None:
        self._begun[conn] = time.perf_counter()

    def _end(self, conn: Connection) -> None:
        self._ending = self._begun.pop(conn, None)

    def _before_execute(self, conn: Connection, *_args: Any) -> None:
        conn.info["bench_built"] = time.perf_counter()

    def _before(self, conn: Connection, *_args: Any) -> None:
        now = time.perf_counter()
        built = conn.info.pop("bench_built", None)
        if built is not None:
            # From execute() to the cursor: SQLAlchemy compiling the statement.
            self._add("building statements (SQLAlchemy)", now - built, trip=False)
        conn.info["bench_t0"] = now

    def _after(self, conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        elapsed = time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
        self._add(kind_of(statement), elapsed)


def kind_of(sql: str) -> str:
    text = " ".join(sql.split()).upper()
    if "INFORMATION_SCHEMA" in text or text.startswith(("SHOW", "PRAGMA", "DESCRIBE")):
        return "catalog and settings"
    if text.startswith("SELECT") and text.endswith("FOR UPDATE"):
        return "locking reads (FOR UPDATE)"
    if text.startswith("DELETE"):
        return "deletes"
    if text.startswith("UPDATE"):
        return "updates"
    if text.startswith(("SELECT", "WITH")):
        return "other reads (look-ups, checks, verification)"
    return "session (SET, GET_LOCK, ...)"


# --- runs -----------------------------------------------------------------------------


@dataclass
class Result:
    seconds: float
    rows: int
    longest: float = 0.0
    kinds: dict[str, Kind] = field(default_factory=dict)
    plan_seconds: float = 0.0


def run_eraser(engine: Engine, profile: bool = False) -> Result:
    probe = Probe(engine)
    t0 = time.perf_counter()
    plan = build_plan(reflect(engine), list(SUBJECT_COLUMNS))
    planned = time.perf_counter()
    probe.reset()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    report = erase(engine, plan, SUBJECT, ExecutionOptions())
    done = time.perf_counter()
    if profiler is not None:
        profiler.disable()
        print("  cProfile of one erase(), by own time (slower than unprofiled):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    if not report.verified:
        raise SystemExit("the erasure was not verified")
    return Result(done - planned, report.total_rows, probe.longest, dict(probe.kinds), planned - t0)


def run_cascade(engine: Engine) -> Result:
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tenants WHERE id = :t"), {"t": SUBJECT})
    seconds = time.perf_counter() - t0
    return Result(seconds, 0, seconds)


def trial(backend: Backend, cascade: bool, profile: bool = False) -> Result:
    engine = backend.copy(cascade)
    try:
        before = by_tenant(engine)
        result = run_cascade(engine) if cascade else run_eraser(engine, profile)
        after = by_tenant(engine)
        expected = sum(n for (_, t), n in before.items() if t == SUBJECT)
        if cascade:
            result.rows = expected
        kept = {k: v for k, v in before.items() if k[1] != SUBJECT}
        if after != kept or result.rows != expected:
            raise SystemExit(f"{backend.name}: other tenants changed or counts differ")
        return result
    finally:
        engine.dispose()


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    med = fmt.format(statistics.median(values))
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def report(backend: Backend, size: int, eraser: list[Result], cascade: list[Result]) -> None:
    rows = eraser[0].rows
    print(f"\n{backend.name}, tenant of {rows:,} rows ({size:,} asked), {len(eraser)} trials")
    for label, runs in (("eraser erase (in process)", eraser), ("cascade DELETE, one tx", cascade)):
        secs = [r.seconds for r in runs]
        rates = [r.rows / r.seconds for r in runs]
        print(f"  {label:28} {spread(secs)} s   {spread(rates, '{:,.0f}')} rows/s")
    ratio = statistics.median(c.seconds for c in cascade) / statistics.median(
        e.seconds for e in eraser
    )
    print(f"  Eraser's rows/s against the cascade's (medians): {ratio:.2f}")
    print(
        f"  longest Eraser transaction (begin to COMMIT returned): "
        f"{spread([r.longest * 1000 for r in eraser], '{:.1f}')} ms;"
        f" the cascade's one: {spread([r.seconds * 1000 for r in cascade], '{:.0f}')} ms"
    )
    print(f"  reflect + plan: {spread([r.plan_seconds for r in eraser])} s (not in the above)")
    if backend.name == "mariadb":
        breakdown(eraser)


def breakdown(runs: list[Result]) -> None:
    """Where erase()'s time went, the median trial's."""
    run = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    trips = sum(k.count for k in run.kinds.values() if k.trip)
    in_db = sum(k.seconds for k in run.kinds.values())
    print(f"  where the median trial's {run.seconds:.3f} s went ({trips:,} round trips):")
    for name, kind in sorted(run.kinds.items(), key=lambda kv: -kv[1].seconds):
        share = 100 * kind.seconds / run.seconds
        per = 1000 * kind.seconds / max(1, kind.count)
        print(
            f"    {name:46} {kind.count:7,} x {per:6.2f} ms = {kind.seconds:7.3f} s ({share:4.1f}%)"
        )
    rest = run.seconds - in_db
    print(
        f"    {'the rest (Python: planning batches, the driver)':46} {'':19} {rest:7.3f} s "
        f"({100 * rest / run.seconds:4.1f}%)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,100000", help="erased tenant's rows, each")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--backends", default="mariadb,sqlite")
    parser.add_argument(
        "--profile", action="store_true", help="also profile one extra erasure per size"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    makers = {"mariadb": MariaDB, "sqlite": SQLite}
    for name in args.backends.split(","):
        backend: Backend = makers[name]()
        try:
            for size in sizes:
                tenants = {SUBJECT: size, **dict.fromkeys(OTHER_TENANTS, max(sizes) // 10)}
                t0 = time.perf_counter()
                backend.prepare(size, generate(tenants))
                print(
                    f"{name}: loaded for {size:,} in {time.perf_counter() - t0:.1f} s", flush=True
                )
                eraser: list[Result] = []
                cascade: list[Result] = []
                for n in range(args.trials):
                    for is_cascade in (n % 2 == 1, n % 2 == 0):
                        (cascade if is_cascade else eraser).append(trial(backend, is_cascade))
                report(backend, size, eraser, cascade)
                if args.profile:
                    trial(backend, False, profile=True)
        finally:
            backend.cleanup()
    print("\n(loaded machine: figures are indicative only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
