"""A deployment to break on purpose: PostgreSQL job store, Redis broker and result
backend (databases of their own), killable ``eraser worker`` processes, an
``eraser beat`` reaper, and three target databases:

- ``big`` (PostgreSQL): accounts -> projects -> items for several tenants; a
  statement-level trigger makes every delete batch on ``items`` take ~20 ms, so an
  erasure lasts seconds and can be interrupted at any point;
- ``small`` (MariaDB): messages -> deliveries;
- ``locky`` (PostgreSQL): one ``notes`` table, for lock and deadlock provocations.

Used by ``tests/e2e/test_resilience.py`` and ``bench/chaos.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from celery import Celery

from models import migrate
from models.messages import ErasureRequest, JobView
from models.registry import load_registry
from models.store.database import JobStore
from models.store.tables import Attempt, Job, Task
from tasks.submit import submit
from tests.conftest import TargetDB, make_db
from tests.e2e.deployment_secrets import SECRETS, seal_of
from tests.redis_dbs import pool
from worker.database import create_engine

ROOT = Path(__file__).resolve().parents[2]

REGISTRY = """
[subjects.tenant]
column = "tenant_key"

[services.big]
url_env = "RIG_BIG_URL"
batch_size = {big_batch}

[services.small]
url_env = "RIG_SMALL_URL"

[services.locky]
url_env = "RIG_LOCKY_URL"
lock_timeout_ms = 3000

# The locky database again, as a role that may read but not delete notes.
[services.limited]
url_env = "RIG_LIMITED_URL"
"""

#: Settings for a quick-recovering deployment (seconds): short slices and heartbeats,
#: a visibility timeout of 10 s swept every second, a reaper every second.
FAST = {
    "ERASER_SLICE_SECONDS": "2",
    "ERASER_HEARTBEAT_SECONDS": "0.5",
    "ERASER_STALE_AFTER_SECONDS": "4",
    "ERASER_VISIBILITY_TIMEOUT_SECONDS": "10",
    "ERASER_UNACKED_RESTORE_INTERVAL_SECONDS": "1",
    "ERASER_RETRY_BACKOFF_SECONDS": "0.3",
    "ERASER_RETRY_BACKOFF_MAX_SECONDS": "2",
    "ERASER_MAX_RETRIES": "4",
    "ERASER_MAX_CRASHES": "3",
    "ERASER_REAPER_INTERVAL_SECONDS": "1",
    "ERASER_DISPATCH_GRACE_SECONDS": "3",
    "ERASER_TASK_EVENTS": "false",
}


@dataclass
class Rig:
    store_db: TargetDB
    big: TargetDB
    small: TargetDB
    locky: TargetDB
    tmp: Path
    #: The Redis databases this rig holds: broker, result backend.
    redis_dbs: list[int]
    tenants: list[str]
    env: dict[str, str] = field(default_factory=dict)
    store: JobStore | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None
    client: Celery | None = None
    limited_role: str = ""
    _count: int = 0

    # --- processes ---------------------------------------------------------------------

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        self._count += 1
        with (self.tmp / f"worker{self._count}.log").open("wb") as log:
            proc = self._spawn(
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "worker",
                    "-c",
                    str(concurrency),
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"rig{os.getpid()}-{self._count}@%h",
                ],
                log,
            )
        self.workers.append(proc)
        path = self.tmp / f"worker{self._count}.log"
        deadline = time.monotonic() + 60
        while b"ready." not in path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + path.read_text()[-3000:])
            time.sleep(0.1)
        return proc

    def start_beat(self) -> None:
        with (self.tmp / "beat.log").open("wb") as log:
            self.beat = self._spawn([sys.executable, "-m", "api.cli", "beat"], log)

    def _spawn(self, argv: list[str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_pid(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """``kill -9`` the whole worker: main process and pool children."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def pool_children(self, proc: subprocess.Popen[bytes]) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        for proc in [*self.workers, *([self.beat] if self.beat else [])]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.workers.clear()
        self.beat = None

    # --- jobs -----------------------------------------------------------------------------

    def submit(self, subject: str, services: list[str], dry_run: bool = False) -> str:
        """Submit as ``eraser submit`` does: commit, then ask a worker to dispatch."""
        assert self.store is not None
        assert self.client is not None
        registry = load_registry(Path(self.env["ERASER_CONFIG"]))
        job, _ = submit(
            self.store,
            registry,
            ErasureRequest(
                subject_kind="tenant", subject_value=subject, services=services, dry_run=dry_run
            ),
        )
        self.client.send_task("eraser.dispatch_job", args=(job.id,), queue="eraser")
        return job.id

    def view(self, job_id: str) -> JobView:
        assert self.store is not None
        with self.store.transaction() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return JobView.of(job)

    def wait(self, job_id: str, timeout: float = 120) -> JobView:
        deadline = time.monotonic() + timeout
        while True:
            view = self.view(job_id)
            if view.status in ("succeeded", "partially_failed", "failed", "cancelled"):
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {view.status}: {view.model_dump_json()}")
            time.sleep(0.2)

    def attempts(self, job_id: str, service: str) -> list[Attempt]:
        assert self.store is not None
        with self.store.transaction() as session:
            return list(
                session.scalars(
                    sa.select(Attempt)
                    .join(Task, Task.id == Attempt.task_id)
                    .where(Task.job_id == job_id, Task.service == service)
                    .order_by(Attempt.id)
                )
            )

    def flush_redis(self) -> None:
        """FLUSHDB of the broker and result databases (they stay this rig's)."""
        for number in self.redis_dbs:
            pool().flush(number)

    # --- data -------------------------------------------------------------------------------

    def rows_left(self, tenant: str, services: tuple[str, ...] = ("big", "small", "locky")) -> int:
        """Rows of ``tenant`` still in the named services' databases."""
        counts = self._rows_by_service(tenant)
        return sum(counts[s] for s in services)

    def _rows_by_service(self, tenant: str) -> dict[str, int]:
        with self.big.engine.connect() as conn:
            big = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM accounts WHERE tenant_key = :t)"
                    " + (SELECT count(*) FROM projects p JOIN accounts a ON a.id = p.account_id"
                    "    WHERE a.tenant_key = :t)"
                    " + (SELECT count(*) FROM items i JOIN projects p ON p.id = i.project_id"
                    "    JOIN accounts a ON a.id = p.account_id WHERE a.tenant_key = :t)"
                ),
                {"t": tenant},
            ).scalar_one()
        with self.small.engine.connect() as conn:
            small = conn.execute(
                sa.text("SELECT count(*) FROM messages WHERE tenant_key = :t"), {"t": tenant}
            ).scalar_one()
        with self.locky.engine.connect() as conn:
            locky = conn.execute(
                sa.text("SELECT count(*) FROM notes WHERE tenant_key = :t"), {"t": tenant}
            ).scalar_one()
        return {"big": int(big), "small": int(small), "locky": int(locky)}

    def fingerprint(self, exclude: set[str]) -> str:
        """A hash of every row of every tenant not in ``exclude`` (other subjects must
        stay byte-identical)."""
        digest = hashlib.sha256()
        queries = [
            (self.big, "SELECT a.tenant_key, a.* FROM accounts a"),
            (
                self.big,
                "SELECT a.tenant_key, p.* FROM projects p JOIN accounts a ON a.id = p.account_id",
            ),
            (
                self.big,
                "SELECT a.tenant_key, i.* FROM items i JOIN projects p ON p.id = i.project_id"
                " JOIN accounts a ON a.id = p.account_id",
            ),
            (self.small, "SELECT m.tenant_key, m.* FROM messages m"),
            (
                self.small,
                "SELECT m.tenant_key, d.* FROM deliveries d JOIN messages m ON m.id = d.message_id",
            ),
            (self.locky, "SELECT n.tenant_key, n.* FROM notes n"),
        ]
        for db, query in queries:
            with db.engine.connect() as conn:
                rows = sorted(
                    (tuple(r) for r in conn.execute(sa.text(query)) if r[0] not in exclude),
                    key=repr,
                )
            digest.update(repr(rows).encode())
        return digest.hexdigest()


def _load(rig: Rig, accounts: int, projects: int, items: int) -> None:
    rig.big.run(
        "CREATE TABLE accounts (id int PRIMARY KEY, tenant_key text NOT NULL, name text)",
        "CREATE INDEX ON accounts (tenant_key)",
        "CREATE TABLE projects (id int PRIMARY KEY,"
        " account_id int NOT NULL REFERENCES accounts(id), title text)",
        "CREATE INDEX ON projects (account_id)",
        "CREATE TABLE items (id int PRIMARY KEY,"
        " project_id int NOT NULL REFERENCES projects(id), body text)",
        "CREATE INDEX ON items (project_id)",
        # Every delete statement on items takes ~20 ms: an erasure lasts long enough to
        # be interrupted anywhere.
        "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$",
        "CREATE TRIGGER slow_items AFTER DELETE ON items"
        " FOR EACH STATEMENT EXECUTE FUNCTION slow_down()",
    )
    rig.small.run(
        "CREATE TABLE messages (id int PRIMARY KEY, tenant_key varchar(40) NOT NULL,"
        " body varchar(80), INDEX (tenant_key))",
        "CREATE TABLE deliveries (id int PRIMARY KEY, message_id int NOT NULL,"
        " FOREIGN KEY (message_id) REFERENCES messages(id))",
    )
    rig.locky.run(
        "CREATE TABLE notes (id int PRIMARY KEY, tenant_key text NOT NULL, body text)",
        "CREATE INDEX ON notes (tenant_key)",
    )
    ids = iter(range(1, 100_000_000))
    acc: list[dict[str, Any]] = []
    pro: list[dict[str, Any]] = []
    ite: list[dict[str, Any]] = []
    msg: list[dict[str, Any]] = []
    dlv: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for tenant in rig.tenants:
        for _ in range(accounts):
            a = next(ids)
            acc.append({"id": a, "tenant_key": tenant, "name": f"account {a}"})
            for _ in range(projects):
                p = next(ids)
                pro.append({"id": p, "account_id": a, "title": f"project {p}"})
                ite.extend(
                    {"id": next(ids), "project_id": p, "body": "x" * 40} for _ in range(items)
                )
        for _ in range(20):
            m = next(ids)
            msg.append({"id": m, "tenant_key": tenant, "body": "hello"})
            dlv.append({"id": next(ids), "message_id": m})
        notes.extend({"id": next(ids), "tenant_key": tenant, "body": "n"} for _ in range(30))
    md = sa.MetaData()
    with rig.big.engine.begin() as conn:
        md.reflect(conn)
        conn.execute(sa.insert(md.tables["accounts"]), acc)
        conn.execute(sa.insert(md.tables["projects"]), pro)
        for start in range(0, len(ite), 20_000):
            conn.execute(sa.insert(md.tables["items"]), ite[start : start + 20_000])
        conn.exec_driver_sql("ANALYZE")
    md2 = sa.MetaData()
    with rig.small.engine.begin() as conn:
        md2.reflect(conn)
        conn.execute(sa.insert(md2.tables["messages"]), msg)
        conn.execute(sa.insert(md2.tables["deliveries"]), dlv)
    md3 = sa.MetaData()
    with rig.locky.engine.begin() as conn:
        md3.reflect(conn)
        conn.execute(sa.insert(md3.tables["notes"]), notes)


def build_rig(
    tmp: Path,
    *,
    tenants: int = 8,
    accounts: int = 4,
    projects: int = 5,
    items: int = 300,
    big_batch: int = 10,
    broker_db: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Rig]:
    """Create the databases, load them, migrate the job store; yields the rig (no
    process started) and tears everything down afterwards.

    The broker and result databases are claimed from ``tests.redis_dbs`` (the first
    free pair of ``ERASER_TEST_REDIS_DBS``); ``broker_db`` is no longer used and kept
    for callers that still pass it."""
    del broker_db
    with ExitStack() as stack:
        dbs = []
        for backend in ("postgresql", "postgresql", "mysql", "postgresql"):
            gen = make_db(backend, tmp)
            dbs.append(next(gen))
            stack.callback(gen.close)
        store_db, big, small, locky = dbs
        rig = Rig(
            store_db,
            big,
            small,
            locky,
            tmp,
            [],
            [f"tenant-{i:02d}" for i in range(tenants)],
        )
        _load(rig, accounts, projects, items)
        role = f"eraser_rig_{os.getpid()}"
        rig.locky.run(
            f"DROP ROLE IF EXISTS {role}",
            f"CREATE ROLE {role} LOGIN",
            f"GRANT SELECT ON notes TO {role}",
        )

        def drop_role() -> None:
            rig.locky.run(f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}")

        stack.callback(drop_role)
        rig.limited_role = role
        migrate.upgrade(store_db.engine)
        rig.store = JobStore(create_engine(store_db.url), seal_of(SECRETS))
        stack.callback(rig.store.dispose)
        registry_path = tmp / "rig.toml"
        registry_path.write_text(REGISTRY.format(big_batch=big_batch), encoding="utf-8")
        rig.redis_dbs = pool().claim(2)
        stack.callback(pool().release, rig.redis_dbs)
        broker, backend = (pool().url_of(number) for number in rig.redis_dbs)
        rig.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ERASER_")},
            "ERASER_DATABASE_URL": store_db.url,
            "ERASER_BROKER_URL": broker,
            "ERASER_RESULT_BACKEND": backend,
            "ERASER_CONFIG": str(registry_path),
            **SECRETS,
            **FAST,
            **(extra_env or {}),
            "RIG_BIG_URL": big.url,
            "RIG_SMALL_URL": small.url,
            "RIG_LOCKY_URL": locky.url,
            "RIG_LIMITED_URL": sa.make_url(locky.url)
            .set(username=role)
            .render_as_string(hide_password=False),
            "PYTHONPATH": str(ROOT),
        }
        rig.client = Celery("rig-client", broker=broker, backend=backend)
        rig.client.conf.update(task_serializer="json", accept_content=["json"])
        stack.callback(rig.stop)
        yield rig
