"""A real Eraser deployment in miniature: PostgreSQL job store (migrated by Alembic),
Redis broker and result backend, real ``celery worker`` processes, and three target
databases (PostgreSQL with two schemas, MariaDB, another PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from models import migrate
from models.store.database import JobStore
from tests.conftest import TargetDB, make_db
from tests.e2e.deployment_secrets import SECRETS, seal_of
from tests.redis_dbs import REDIS_URL, claimed, need_redis
from worker.database import create_engine

SUBJECT = "acme-5b1e9"
OTHERS = ("globex-77", "initech-31")
TENANTS = (SUBJECT, *OTHERS)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Estate:
    """The target databases and what was loaded into them."""

    orders: TargetDB
    inventory: TargetDB
    notify: TargetDB
    tables: dict[str, list[sa.Table]] = field(default_factory=dict)

    def rows_of(self, tenant: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every row that belongs to ``tenant``, by table (directly or by reference)."""
        result: dict[str, list[tuple[Any, ...]]] = {}
        for name, db in (
            ("orders", self.orders),
            ("inventory", self.inventory),
            ("notify", self.notify),
        ):
            with db.engine.connect() as conn:
                for table in self.tables[name]:
                    query = sa.select(table)
                    owner = _owner_condition(table, tenant, self.tables[name])
                    rows = conn.execute(query.where(owner)).all()
                    result[f"{name}:{table.fullname}"] = sorted(tuple(r) for r in rows)
        return result


def _owner_condition(table: sa.Table, tenant: str, siblings: list[sa.Table]) -> Any:
    if "tenant_key" in table.c:
        return table.c.tenant_key == tenant
    fk = next(iter(table.foreign_keys))
    parent = fk.column.table
    assert isinstance(parent, sa.Table)
    sub = sa.select(fk.column).where(_owner_condition(parent, tenant, siblings))
    return fk.parent.in_(sub)


def _load_estate(orders: TargetDB, inventory: TargetDB, notify: TargetDB) -> Estate:
    estate = Estate(orders, inventory, notify)

    md = sa.MetaData()
    customers = sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(40), nullable=False, index=True),
        sa.Column("name", sa.String(40)),
        schema="public",
    )
    order_t = sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(40), nullable=False, index=True),
        sa.Column(
            "customer_id", sa.Integer, sa.ForeignKey(customers.c.id), nullable=False, index=True
        ),
        schema="public",
    )
    invoices = sa.Table(
        "invoices",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("order_id", sa.Integer, sa.ForeignKey(order_t.c.id), nullable=False, index=True),
        sa.Column("amount", sa.Integer),
        schema="billing",
    )
    orders.run("CREATE SCHEMA billing")
    orders.create(md)
    estate.tables["orders"] = [customers, order_t, invoices]

    md2 = sa.MetaData()
    products = sa.Table(
        "products",
        md2,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(40), nullable=False, index=True),
    )
    stock = sa.Table(
        "stock",
        md2,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "product_id", sa.Integer, sa.ForeignKey(products.c.id), nullable=False, index=True
        ),
        sa.Column("qty", sa.Integer),
    )
    inventory.create(md2)
    estate.tables["inventory"] = [products, stock]

    md3 = sa.MetaData()
    messages = sa.Table(
        "messages",
        md3,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(40), nullable=False, index=True),
        sa.Column("body", sa.String(80)),
    )
    deliveries = sa.Table(
        "deliveries",
        md3,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "message_id", sa.Integer, sa.ForeignKey(messages.c.id), nullable=False, index=True
        ),
    )
    notify.create(md3)
    estate.tables["notify"] = [messages, deliveries]

    ids = iter(range(1, 1_000_000))
    for tenant in TENANTS:
        rows: dict[str, list[dict[str, Any]]] = {}
        for _ in range(15):
            cid = next(ids)
            rows.setdefault("customers", []).append({"id": cid, "tenant_key": tenant, "name": "n"})
            for _ in range(3):
                oid = next(ids)
                rows.setdefault("orders", []).append(
                    {"id": oid, "tenant_key": tenant, "customer_id": cid}
                )
                rows.setdefault("invoices", []).append(
                    {"id": next(ids), "order_id": oid, "amount": 5}
                )
            pid = next(ids)
            rows.setdefault("products", []).append({"id": pid, "tenant_key": tenant})
            rows.setdefault("stock", []).append({"id": next(ids), "product_id": pid, "qty": 3})
            mid = next(ids)
            rows.setdefault("messages", []).append(
                {"id": mid, "tenant_key": tenant, "body": "hello"}
            )
            rows.setdefault("deliveries", []).append({"id": next(ids), "message_id": mid})
        for db, table in (
            (orders, customers),
            (orders, order_t),
            (orders, invoices),
            (inventory, products),
            (inventory, stock),
            (notify, messages),
            (notify, deliveries),
        ):
            db.insert(table, rows[table.name])
    return estate


REGISTRY = """
[subjects.tenant]
column = "tenant_key"

[services.orders]
url_env = "E2E_ORDERS_URL"
schemas = ["public", "billing"]
batch_size = 7

[services.inventory]
url_env = "E2E_INVENTORY_URL"
queue = "eraser-inventory"

[services.notify]
url_env = "E2E_NOTIFY_URL"

[services.broken]
url_env = "E2E_BROKEN_URL"
"""


class BrokerMonitor(threading.Thread):
    """Records every command the Redis server executes (message bodies, results) via
    MONITOR, from the moment ``ready`` is set.

    The connection has no socket timeout: a Redis with nothing to do sends nothing, for
    as long as it likes, and that is not a failure (redis-py's default of 5 s ended the
    thread on an idle server). A real failure is kept in ``error`` and raised by
    ``commands()``, so a test never reads a capture that silently stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=None, socket_keepalive=True)
        self.url = url
        self.sink: list[str] = []
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with self.client.monitor() as monitor:
                self.ready.set()
                for command in monitor.listen():
                    if self.stopping.is_set():
                        return
                    self.sink.append(str(command.get("command", "")))
        except Exception as exc:  # any failure is the test's to see
            self.error = exc
        finally:
            self.ready.set()
            self.client.close()
        if not self.stopping.is_set() and self.error is None:
            self.error = RuntimeError("the MONITOR connection ended")

    def start_and_wait(self, timeout: float = 10) -> None:
        """Start, and return once Redis has accepted MONITOR."""
        self.start()
        if not self.ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"MONITOR did not start: {self.error!r}")

    def commands(self) -> list[str]:
        """What was captured so far; raises if the monitor stopped on its own."""
        if self.error is not None:
            raise RuntimeError(f"the broker monitor failed: {self.error!r}") from self.error
        return list(self.sink)

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.url).ping()  # a command, to wake the reader
        self.join(timeout=5)


@dataclass
class Deployment:
    estate: Estate
    store: JobStore
    env: dict[str, str]
    log_path: Path
    registry_path: Path
    dsns: list[str]
    monitor: BrokerMonitor

    @property
    def captured(self) -> list[str]:
        """Every Redis command seen since the worker started (fails if the monitor died)."""
        return self.monitor.commands()

    def eraser(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the ``eraser`` CLI as a separate process, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=ROOT,
            check=False,
        )

    def worker_log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _env(store_url: str, registry: Path, tmp: Path, redis_dbs: list[int]) -> dict[str, str]:
    broker_db, result_db = redis_dbs
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
        "ERASER_DATABASE_URL": store_url,
        "ERASER_BROKER_URL": f"{REDIS_URL}/{broker_db}",
        "ERASER_RESULT_BACKEND": f"{REDIS_URL}/{result_db}",
        "ERASER_CONFIG": str(registry),
        **SECRETS,
        "ERASER_HEARTBEAT_SECONDS": "0",
        "ERASER_LIVENESS_FILE": str(tmp / "worker.alive"),
        "ERASER_LOG_FORMAT": "json",
        "ERASER_LIVENESS_SECONDS": "0.5",
        # The broken service's refused connection is transient: retried quickly.
        "ERASER_MAX_RETRIES": "2",
        "ERASER_RETRY_BACKOFF_SECONDS": "0.05",
        "ERASER_RETRY_BACKOFF_MAX_SECONDS": "0.2",
        "PYTHONPATH": str(ROOT),
    }


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "worker",
                "-c",
                "2",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"e2e{os.getpid()}@%h",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


# Module scope: the worker and its Redis databases are gone before any later module.
@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    need_redis()
    tmp = tmp_path_factory.mktemp("e2e")
    gens = [
        make_db("postgresql", tmp),
        make_db("mysql", tmp),
        make_db("postgresql", tmp),
        make_db("postgresql", tmp),
    ]
    dbs = [next(g) for g in gens]
    store_db, inventory, orders, notify = dbs
    try:
        estate = _load_estate(orders, inventory, notify)
        migrate.upgrade(store_db.engine)
        store = JobStore(create_engine(store_db.url), seal_of(SECRETS))
        registry_path = tmp / "services.toml"
        registry_path.write_text(REGISTRY, encoding="utf-8")
        broken = "postgresql://eraser:wrong-secret-pw@127.0.0.1:1/nowhere"
        with claimed(2) as redis_dbs:
            env = {
                **_env(store_db.url, registry_path, tmp, redis_dbs),
                "E2E_ORDERS_URL": orders.url,
                "E2E_INVENTORY_URL": inventory.url,
                "E2E_NOTIFY_URL": notify.url,
                "E2E_BROKEN_URL": broken,
            }
            monitor = BrokerMonitor(env["ERASER_BROKER_URL"])
            monitor.start_and_wait()
            log_path = tmp / "worker.log"
            worker = _start_worker(env, log_path)
            deployment = Deployment(
                estate=estate,
                store=store,
                env=env,
                log_path=log_path,
                registry_path=registry_path,
                dsns=[store_db.url, orders.url, inventory.url, notify.url, broken],
                monitor=monitor,
            )
            try:
                deadline = time.monotonic() + 60
                while "ready." not in deployment.worker_log():
                    if worker.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("the worker did not start:\n" + deployment.worker_log()[-3000:])
                    time.sleep(0.2)
                yield deployment
            finally:
                _stop_worker(worker)
                monitor.stop()
                store.dispose()
    finally:
        for gen in gens:
            gen.close()
