"""A deployment behind the HTTP API, for ``test_api.py`` and ``test_api_fuzz.py``.

``running_api(tmp, tenants, accounts)`` brings up, for as long as the ``with`` block
lasts:

- a PostgreSQL job store migrated by Alembic;
- two target databases: ``billing`` (PostgreSQL: ``customers`` -> ``invoices``, and
  ``logins`` keyed by ``account_key``) and ``crm`` (MariaDB: ``projects`` ->
  ``notes``), loaded with rows for every tenant and account given;
- a registry with subject kinds ``tenant``, ``account`` (``admin_only``) and
  ``legacy``, held by ``archive`` (a queue no worker consumes, so its tasks wait and
  can be cancelled) and ``broken`` (a refused connection, so its tasks are
  dead-lettered);
- a real ``eraser worker -c 2`` process on two Redis databases claimed for it (broker,
  results; see ``tests/redis_dbs.py``);
- a real ``eraser api`` process on a free port, with one API key per scope
  combination.

Redis down: skip (fail with ``ERASER_REQUIRE_SERVICES=1``), like ``conftest.py``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from api.keys import Scope, create_key
from models import migrate
from models.keyring import new_secrets
from models.store.database import JobStore
from models.store.tables import JobStatus, Task, TaskStatus
from tests.conftest import TargetDB, make_db
from tests.e2e.deployment_secrets import seal_of
from tests.redis_dbs import claimed, need_redis, pool
from worker.catalog.reflection import LEDGER_TABLE
from worker.database import create_engine

ROOT = Path(__file__).resolve().parents[2]
#: A password that must never reach an API answer: the broken service's DSN holds it.
BROKEN_PASSWORD = "broken-Pa55word-7q"  # noqa: S105 - a marker, not a credential
#: The queue of the ``archive`` service: no worker of this deployment consumes it.
PARKED_QUEUE = "eraser-archive"
TERMINAL = {s.value for s in JobStatus if s.terminal}
TASK_TERMINAL = [s.value for s in TaskStatus if s.terminal]

#: Key name -> scopes: one key per combination the tests need.
KEY_SCOPES: dict[str, list[Scope]] = {
    "reader": [Scope.READ],
    "submitter": [Scope.SUBMIT],
    "submit_read": [Scope.SUBMIT, Scope.READ],
    "admin_read": [Scope.ADMIN, Scope.READ],
    "all": [Scope.ADMIN, Scope.SUBMIT, Scope.READ],
}

REGISTRY = f"""
[subjects.tenant]
column = "tenant_key"

[subjects.account]
column = "account_key"
admin_only = true

[subjects.legacy]
column = "tenant_key"

[services.billing]
url_env = "API_E2E_BILLING_URL"
subjects = ["tenant", "account"]

[services.crm]
url_env = "API_E2E_CRM_URL"
subjects = ["tenant"]
batch_size = 3

[services.archive]
url_env = "API_E2E_BILLING_URL"
subjects = ["legacy"]
queue = "{PARKED_QUEUE}"

[services.broken]
url_env = "API_E2E_BROKEN_URL"
subjects = ["legacy"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Targets:
    """The two target databases, their tables, and who owns which row."""

    billing: TargetDB
    crm: TargetDB
    tables: dict[str, list[sa.Table]] = field(default_factory=dict)

    def _dbs(self) -> list[tuple[str, TargetDB]]:
        return [("billing", self.billing), ("crm", self.crm)]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every target table, by ``service:table``, sorted."""
        result: dict[str, list[tuple[Any, ...]]] = {}
        for name, db in self._dbs():
            for table, rows in db.snapshot(*self.tables[name]).items():
                result[f"{name}:{table}"] = rows
        return result

    def rows_of(self, column: str, value: str) -> dict[str, list[tuple[Any, ...]]]:
        """Rows whose ``column`` is ``value``, or that reference such a row, by table.
        Compared in Python (byte for byte), not by the database's collation."""
        owned: dict[str, list[tuple[Any, ...]]] = {}
        for name, db in self._dbs():
            with db.engine.connect() as conn:
                mine: dict[str, set[Any]] = {}
                for table in self.tables[name]:
                    rows = conn.execute(sa.select(table)).mappings().all()
                    if column in table.c:
                        hit = [r for r in rows if r[column] == value]
                    else:
                        fk = next(iter(table.foreign_keys), None)
                        parent = fk.column.table.name if fk is not None else None
                        hit = [
                            r
                            for r in rows
                            if fk is not None and r[fk.parent.name] in mine.get(str(parent), ())
                        ]
                    mine[table.name] = {r["id"] for r in hit}
                    owned[f"{name}:{table.fullname}"] = sorted(tuple(r.values()) for r in hit)
        return owned

    def tables_present(self) -> dict[str, list[str]]:
        """The services' own tables (not Eraser's ledger, which its erasures create)."""
        return {
            name: sorted(t for t in sa.inspect(db.engine).get_table_names() if t != LEDGER_TABLE)
            for name, db in self._dbs()
        }


def _load(
    billing: TargetDB, crm: TargetDB, tenants: Sequence[str], accounts: Sequence[str]
) -> Targets:
    targets = Targets(billing, crm)
    md = sa.MetaData()
    customers = sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(200), nullable=False, index=True),
        sa.Column("name", sa.String(80)),
    )
    invoices = sa.Table(
        "invoices",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "customer_id", sa.Integer, sa.ForeignKey(customers.c.id), nullable=False, index=True
        ),
        sa.Column("amount", sa.Numeric(10, 2)),
    )
    logins = sa.Table(
        "logins",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_key", sa.String(200), nullable=False, index=True),
        sa.Column("ip", sa.String(40)),
    )
    billing.create(md)
    targets.tables["billing"] = [customers, invoices, logins]

    md2 = sa.MetaData()
    projects = sa.Table(
        "projects",
        md2,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant_key", sa.String(200), nullable=False, index=True),
        sa.Column("title", sa.String(80)),
    )
    notes = sa.Table(
        "notes",
        md2,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(
            "project_id", sa.Integer, sa.ForeignKey(projects.c.id), nullable=False, index=True
        ),
        sa.Column("body", sa.Text),
    )
    crm.create(md2)
    targets.tables["crm"] = [projects, notes]

    ids = iter(range(1, 1_000_000))
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in ("c", "i", "l", "p", "n")}
    for n, tenant in enumerate(tenants):
        # 3 customers with 2 invoices each; 2 projects with 2 notes each.
        for c in range(3):
            cid = next(ids)
            rows["c"].append({"id": cid, "tenant_key": tenant, "name": f"cust {n}.{c} ü"})
            for k in range(2):
                rows["i"].append({"id": next(ids), "customer_id": cid, "amount": f"{n}.{c}{k}"})
        for p in range(2):
            pid = next(ids)
            rows["p"].append({"id": pid, "tenant_key": tenant, "title": f"project {n}.{p}"})
            for k in range(2):
                rows["n"].append({"id": next(ids), "project_id": pid, "body": f"note {k} 日本"})
    for account in accounts:
        for _ in range(2):
            rows["l"].append({"id": next(ids), "account_key": account, "ip": "10.0.0.1"})
    billing.insert(customers, rows["c"])
    billing.insert(invoices, rows["i"])
    billing.insert(logins, rows["l"])
    crm.insert(projects, rows["p"])
    crm.insert(notes, rows["n"])
    return targets


@dataclass
class ApiServer:
    """The running deployment, as the tests see it."""

    url: str
    env: dict[str, str]
    store: JobStore
    targets: Targets
    #: Key name (see ``KEY_SCOPES``) -> secret.
    secrets: dict[str, str]
    #: Key name -> key id (what ``requested_by`` and audit events record).
    key_ids: dict[str, str]
    #: ``eraser secrets generate`` output: the signing key, the pepper, the store key.
    deployment_secrets: dict[str, str]
    broker: redis.Redis
    broker_url: str
    logs: dict[str, Path]
    tmp: Path

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[key]}"} if key else {}

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(key), timeout=30)

    def eraser(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The ``eraser`` CLI as a separate process, with the deployment's settings."""
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=ROOT,
            check=False,
        )

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """The job (as ``GET /v1/jobs/{id}`` shows it) once it is terminal."""
        deadline = time.monotonic() + timeout
        with self.client("reader") as http:
            while True:
                job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
                if job["status"] in TERMINAL:
                    return dict(job)
                if time.monotonic() > deadline:
                    pytest.fail(f"job {job_id} still {job['status']} after {timeout}s")
                time.sleep(0.1)

    def wait_settled(self, timeout: float = 60, ignore: Sequence[str] = ("archive",)) -> None:
        """Wait until every task of the services not in ``ignore`` has ended (the
        ``archive`` service's tasks wait for ever: no worker consumes its queue)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.store.transaction(durable=False) as session:
                open_tasks = session.execute(
                    sa.select(Task.job_id, Task.service, Task.status, Task.attempts).where(
                        Task.status.not_in(TASK_TERMINAL), Task.service.not_in(ignore)
                    )
                ).all()
            if not open_tasks:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"tasks still open after {timeout}s: {open_tasks}")
            time.sleep(0.2)

    def queued(self, queue: str) -> list[dict[str, Any]]:
        """The message bodies waiting on a Redis-backed kombu queue (not consumed)."""
        return [decode_message(raw) for raw in self.broker.lrange(queue, 0, -1)]

    def log_tail(self, name: str, size: int = 3000) -> str:
        return self.logs[name].read_text(encoding="utf-8", errors="replace")[-size:]


def decode_message(raw: bytes) -> dict[str, Any]:
    """A kombu message as stored in a Redis list: the envelope and the decoded body."""
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded = json.loads(body)
    return {"headers": envelope.get("headers") or {}, "body": decoded}


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def running_api(
    tmp: Path, tenants: Sequence[str], accounts: Sequence[str] = ()
) -> Iterator[ApiServer]:
    """The whole deployment, torn down (processes, Redis databases, databases) after."""
    need_redis()
    with ExitStack() as stack:
        broker_db, result_db = stack.enter_context(claimed(2))
        gens = [make_db(backend, tmp) for backend in ("postgresql", "postgresql", "mysql")]
        for gen in gens:
            stack.callback(gen.close)
        store_db, billing, crm = (next(gen) for gen in gens)
        targets = _load(billing, crm, tenants, accounts)
        migrate.upgrade(store_db.engine)
        deployment_secrets = new_secrets()
        # The deployment's seal: this process reads what the API and the worker write.
        store = JobStore(create_engine(store_db.url), seal_of(deployment_secrets))
        stack.callback(store.dispose)

        registry_path = tmp / "services.toml"
        registry_path.write_text(REGISTRY, encoding="utf-8")
        keys = {name: create_key(f"e2e-{name}", scopes) for name, scopes in KEY_SCOPES.items()}
        broker_url = pool().url_of(broker_db)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
            "ERASER_DATABASE_URL": store_db.url,
            "ERASER_BROKER_URL": broker_url,
            "ERASER_RESULT_BACKEND": pool().url_of(result_db),
            "ERASER_CONFIG": str(registry_path),
            **deployment_secrets,
            "ERASER_API_KEYS": json.dumps([k.entry.model_dump() for k in keys.values()]),
            "ERASER_TASK_EVENTS": "false",
            # The rate limits have tests of their own (test_api_keys_live.py); here the
            # auth matrix's bad keys and the fuzzer's submissions would meet them.
            "ERASER_RATE_LIMIT_SUBMITS": "100000/minute",
            "ERASER_RATE_LIMIT_EXPENSIVE": "100000/minute",
            "ERASER_RATE_LIMIT_BAD_KEYS": "100000/minute",
            # The broken service's refused connection is transient: retried once, fast.
            "ERASER_MAX_RETRIES": "1",
            "ERASER_RETRY_BACKOFF_SECONDS": "0.05",
            "ERASER_RETRY_BACKOFF_MAX_SECONDS": "0.2",
            "API_E2E_BILLING_URL": billing.url,
            "API_E2E_CRM_URL": crm.url,
            "API_E2E_BROKEN_URL": f"postgresql://eraser:{BROKEN_PASSWORD}@127.0.0.1:1/nowhere",
            "PYTHONPATH": str(ROOT),
        }
        logs = {"worker": tmp / "worker.log", "api": tmp / "api.log"}
        # -Q: every queue but the archive service's, whose tasks must stay waiting.
        worker = _spawn(
            [
                "worker",
                "-c",
                "2",
                "-Q",
                "eraser,eraser.requests",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"api-e2e{os.getpid()}@%h",
            ],
            env,
            logs["worker"],
        )
        stack.callback(_stop, worker)
        port = free_port()
        api = _spawn(["api", "--host", "127.0.0.1", "--port", str(port)], env, logs["api"])
        stack.callback(_stop, api)
        broker = redis.Redis.from_url(broker_url)
        stack.callback(broker.close)
        server = ApiServer(
            url=f"http://127.0.0.1:{port}",
            env=env,
            store=store,
            targets=targets,
            secrets={name: k.secret for name, k in keys.items()},
            key_ids={name: k.id for name, k in keys.items()},
            deployment_secrets=deployment_secrets,
            broker=broker,
            broker_url=broker_url,
            logs=logs,
            tmp=tmp,
        )
        _wait_ready(server, worker, api)
        yield server


def _wait_ready(
    server: ApiServer, worker: subprocess.Popen[bytes], api: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 60
    while "ready." not in server.log_tail("worker", size=10**6):
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the worker did not start:\n" + server.log_tail("worker"))
        time.sleep(0.2)
    while True:
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if api.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the API did not start:\n" + server.log_tail("api"))
        time.sleep(0.1)
