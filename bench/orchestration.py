"""Eraser benchmark: the orchestration overhead of a job against a bare Celery chord.

Run with ``python bench/orchestration.py`` (``--quick`` for a short run). It needs the
local PostgreSQL (``postgresql://root@127.0.0.1:5432``, trust auth) and Redis
(``127.0.0.1:6379``); it uses Redis databases 13 (broker) and 14 (results), flushed
before and after, and throw-away PostgreSQL databases named ``eraser_obench_<pid>_*``
(a job store migrated with Alembic and twelve target databases), dropped at the end,
also on failure.

Each target database (``svc01`` .. ``svc12`` in the generated registry) holds the same
small schema, ``tenants`` <- ``customers`` <- ``orders``, each with a ``tenant_id``
column (the subject column) and a few rows of three other tenants. Every erased
subject is a value that has no row anywhere (an *empty* subject), so what is measured
is the orchestration around the engine, not the deletion of rows.

Two workers run, both prefork with concurrency 2, prefetch multiplier 1 and late acks:

* the Eraser worker, started as ``tests/e2e/conftest.py`` starts it
  (``python -m api.cli worker -c 2 --loglevel WARNING --without-gossip --without-mingle``);
* a bare Celery app generated into a temporary directory (a no-op header task and a
  body that counts its results), started with ``celery -A <module> worker`` and the
  same options.

Printed, all measured in the same run:

1. submit -> ``succeeded`` of a 12-service Eraser job as a client sees it:
   ``submit_and_dispatch()`` in this process (as ``eraser submit`` and the API do),
   then the job store is polled every 2 ms (``POLL_SECONDS``) for a terminal status;
   ``--jobs`` jobs (default 50), one at a time, after warm-up jobs. Next to it, a bare
   chord of 12 no-op tasks: apply -> the body's result is read (``AsyncResult.get``).
   The two alternate in blocks of five, so that a change in the machine's load hits
   both alike. p50/p99, ratio, and the target: Eraser's p50 <= 3x the bare chord's.
2. Throughput on the one worker: ``--throughput-jobs`` (default 200) one-service jobs
   (services taken in turn) submitted back to back from one client thread, first submit
   -> last terminal status; the same number of bare chords of one no-op task; two
   alternating rounds (one with ``--quick``). Jobs/s, ratio, and the target: Eraser >=
   1/3 of the bare chord's rate. For reference, the one-at-a-time rate of both too.
3. Where the time goes: each job's end-to-end time cut into stages at the job store's
   timestamps (``dispatched_at``, tasks' ``started_at``/``finished_at``, the job's
   ``finished_at``) and this process's clock (same machine, same clock); the CPU time
   each party used per job (this client, each worker with its pool, PostgreSQL, Redis,
   and everything else on the machine, which is a disturbance) from psutil; and,
   without Celery, one ``execute_task`` on warm engines split into reflection, planning,
   the engine's erase and the job store, with SQL statement counts.

The machine's CPU count and load average (at the start and the end) are printed with
the processes that were busy at the start, so the figures can be read in context; a
stretch during which other processes used more than 15% of a CPU is flagged. The exit
status is 0 when both targets are met, 1 otherwise. ``--quick``: 15 latency jobs and one
round of 60 throughput jobs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import os
import platform
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import celery
import psutil
import redis
import sqlalchemy as sa
from celery import chord
from sqlalchemy import event

from models import migrate
from models.keyring import new_secrets
from models.messages import ErasureRequest
from models.registry import load_registry
from models.settings import get_settings
from models.store.database import JobStore
from models.store.tables import Job
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan
from worker.service import PlanCache, plan_service

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"
BROKER_DB, RESULT_DB = 13, 14
DB_PREFIX = "eraser_obench_"
SERVICES = tuple(f"svc{i:02d}" for i in range(1, 13))
SUBJECT_KIND = "tenant"
CONCURRENCY = 2
#: How often the client reads the job's status from the job store.
POLL_SECONDS = 0.002
#: How often the throughput run counts terminal jobs.
COUNT_POLL_SECONDS = 0.005
TERMINAL = ("succeeded", "partially_failed", "failed", "cancelled")
BARE_MODULE = "obench_bare_app"
BARE_QUEUE = "obench-bare"
LATENCY_TARGET = 3.0
#: Bare chords and Eraser jobs alternate in blocks of this many (latency runs).
LATENCY_BLOCK = 5
#: Share of a CPU used by other processes above which a stretch is called disturbed.
DISTURBED = 0.15
THROUGHPUT_TARGET = 1 / 3

TARGET_SCHEMA = """
CREATE TABLE tenants (
    tenant_id text PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (tenant_id),
    name text NOT NULL
);
CREATE INDEX customers_tenant_id ON customers (tenant_id);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (tenant_id),
    customer_id bigint NOT NULL REFERENCES customers (id),
    amount_cents integer NOT NULL
);
CREATE INDEX orders_tenant_id ON orders (tenant_id);
CREATE INDEX orders_customer_id ON orders (customer_id);
INSERT INTO tenants SELECT 'tenant-' || t, 'Tenant ' || t FROM generate_series(1, 3) t;
INSERT INTO customers (tenant_id, name)
    SELECT 'tenant-' || t, 'customer ' || c FROM generate_series(1, 3) t, generate_series(1, 5) c;
INSERT INTO orders (tenant_id, customer_id, amount_cents)
    SELECT c.tenant_id, c.id, 100 * o FROM customers c, generate_series(1, 3) o;
ANALYZE;
"""

BARE_APP = '''\
"""Generated by bench/orchestration.py: the bare Celery chord Eraser is compared with."""

from celery import Celery

app = Celery("obench_bare", broker={broker!r}, backend={backend!r})
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue={queue!r},
    broker_connection_retry_on_startup=True,
)


@app.task(name="obench.noop")
def noop(i):
    return i


@app.task(name="obench.done")
def done(results):
    return len(results)
'''


# --- figures ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linearly interpolated between ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def summary(values: Sequence[float]) -> str:
    """p50, p99, mean, min and max of durations in seconds, in milliseconds."""
    mean = sum(values) / len(values) if values else float("nan")
    return (
        f"p50 {percentile(values, 50) * 1000:7.1f}  p99 {percentile(values, 99) * 1000:7.1f}  "
        f"mean {mean * 1000:7.1f}  min {min(values, default=0) * 1000:7.1f}  "
        f"max {max(values, default=0) * 1000:7.1f} ms"
    )


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


class WallClock:
    """This process's monotonic clock mapped onto wall-clock time, so that durations
    measured here line up with the job store's ``utcnow()`` timestamps."""

    def __init__(self) -> None:
        self.wall0 = time.time()
        self.perf0 = time.perf_counter()

    def wall(self, perf: float) -> float:
        return self.wall0 + (perf - self.perf0)


def epoch(value: datetime | None) -> float:
    if value is None:
        return float("nan")
    return value.timestamp()


# --- CPU accounting --------------------------------------------------------------------


@dataclass
class CpuSample:
    """CPU seconds used so far, per party, and the machine's busy CPU seconds."""

    parties: dict[str, float]
    machine_busy: float
    at: float


@dataclass
class CpuAccount:
    """CPU seconds used per party over one or more measured stretches."""

    label: str
    wall: float = 0.0
    machine_busy: float = 0.0
    parties: dict[str, float] = field(default_factory=dict)

    def add(self, before: CpuSample, after: CpuSample) -> None:
        self.wall += after.at - before.at
        self.machine_busy += after.machine_busy - before.machine_busy
        for name, used in after.parties.items():
            delta = max(0.0, used - before.parties.get(name, 0.0))
            self.parties[name] = self.parties.get(name, 0.0) + delta

    @property
    def other(self) -> float:
        """Busy CPU seconds of processes that are none of the parties (disturbance)."""
        return max(0.0, self.machine_busy - sum(self.parties.values()))

    def report(self, jobs: int) -> list[str]:
        wall = self.wall or float("nan")
        lines = [f"  CPU during {self.label} ({self.wall:.2f} s wall, {jobs} jobs):"]
        for name, used in (*self.parties.items(), ("everything else", self.other)):
            if used > 0.0005 or name == "everything else":
                lines.append(
                    f"    {name:<16} {used / jobs * 1000:8.2f} ms per job  ({used / wall:5.0%} CPU)"
                )
        cpus = os.cpu_count() or 1
        lines.append(
            f"    machine busy: {self.machine_busy / wall:5.0%} of one CPU"
            f" ({self.machine_busy / wall / cpus:4.0%} of {cpus})"
        )
        return lines


class CpuMeter:
    """Who used the CPUs: this client, each worker (its main process and pool
    children), PostgreSQL's and Redis's processes, and everything else."""

    def __init__(self, workers: dict[str, subprocess.Popen[bytes]]) -> None:
        self.workers = workers
        self.me = psutil.Process()

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def sample(self) -> CpuSample:
        parties: dict[str, float] = {"bench client": self._cpu(self.me)}
        for name, worker in self.workers.items():
            parties[name] = sum(self._cpu(p) for p in self._tree(worker.pid))
        parties["postgresql"] = 0.0
        parties["redis"] = 0.0
        for proc in psutil.process_iter(["name"]):
            name = proc.info.get("name") or ""
            if name.startswith("postgres"):
                parties["postgresql"] += self._cpu(proc)
            elif name.startswith("redis-server"):
                parties["redis"] += self._cpu(proc)
        times = psutil.cpu_times()
        busy = sum(
            getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal")
        )
        return CpuSample(parties, busy, time.perf_counter())

    @contextmanager
    def account(self, into: CpuAccount) -> Iterator[None]:
        """Add the block's CPU use to ``into``."""
        before = self.sample()
        yield
        into.add(before, self.sample())


def busy_processes(threshold: float = 20.0) -> list[str]:
    """Processes other than this one using more than ``threshold`` % of a CPU (0.5 s)."""
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for proc in procs:
        with suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(0.5)
    found = []
    for proc in procs:
        if proc.pid == os.getpid():
            continue
        with suppress(psutil.Error):
            pct = proc.cpu_percent(None)
            if pct >= threshold:
                cmd = " ".join(proc.info.get("cmdline") or [proc.info.get("name") or "?"])
                found.append(f"{pct:5.0f}%  pid {proc.pid}  {cmd[:90]}")
    return found


# --- databases -------------------------------------------------------------------------


@dataclass
class Estate:
    """The job store and the twelve target databases of this run."""

    prefix: str
    store_url: str
    service_urls: dict[str, str]


def _url(database: str) -> str:
    return sa.make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def create_estate(admin: sa.Engine) -> Estate:
    """A template target database loaded once, twelve copies of it, and the job store."""
    prefix = f"{DB_PREFIX}{os.getpid()}_"
    estate = Estate(prefix, _url(prefix + "store"), {})
    template = prefix + "tpl"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{template}"')
    engine = create_engine(_url(template))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(TARGET_SCHEMA)
    finally:
        engine.dispose()
    with admin.connect() as conn:
        for service in SERVICES:
            name = prefix + service
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            estate.service_urls[service] = _url(name)
        conn.exec_driver_sql(f'CREATE DATABASE "{prefix}store"')
    store_engine = create_engine(estate.store_url)
    try:
        migrate.upgrade(store_engine)
    finally:
        store_engine.dispose()
    return estate


def drop_databases(admin: sa.Engine, prefix: str) -> list[str]:
    """Drop every database whose name starts with ``prefix``; returns their names."""
    with admin.connect() as conn:
        names = [
            str(n)
            for n in conn.exec_driver_sql(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,)
            ).scalars()
        ]
        for name in names:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return names


def registry_toml() -> str:
    lines = [f"[subjects.{SUBJECT_KIND}]", 'column = "tenant_id"', ""]
    for service in SERVICES:
        lines += [f"[services.{service}]", f'url_env = "{env_var(service)}"', ""]
    return "\n".join(lines)


def env_var(service: str) -> str:
    return f"OBENCH_{service.upper()}_URL"


def flush_redis() -> None:
    for db in (BROKER_DB, RESULT_DB):
        client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        try:
            client.flushdb()
        finally:
            client.close()


# --- workers ---------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


def start_worker(
    label: str, command: Sequence[str], env: dict[str, str], cwd: Path, log_path: Path
) -> Worker:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            list(command), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
    return Worker(label, proc, log_path)


def wait_ready(worker: Worker, app: Any, node_prefix: str, timeout: float = 60) -> float:
    """Wait until the worker answers a broadcast ping (its consumer is running);
    returns the seconds it took. ``--loglevel WARNING`` hides the "ready." line."""
    started = time.perf_counter()
    deadline = started + timeout
    while True:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"the {worker.name} worker exited:\n{worker.log_tail()}")
        replies = app.control.ping(timeout=0.5)
        if any(node.startswith(node_prefix) for reply in replies for node in reply):
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the {worker.name} worker did not start:\n{worker.log_tail()}")


def stop_worker(worker: Worker) -> None:
    if worker.proc.poll() is not None:
        return
    worker.proc.send_signal(signal.SIGTERM)
    try:
        worker.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait(timeout=10)


def load_bare_app(directory: Path) -> ModuleType:
    """Write the bare Celery app into ``directory`` and import it here (the client)."""
    path = directory / f"{BARE_MODULE}.py"
    path.write_text(
        BARE_APP.format(
            broker=f"{REDIS_URL}/{BROKER_DB}", backend=f"{REDIS_URL}/{RESULT_DB}", queue=BARE_QUEUE
        ),
        encoding="utf-8",
    )
    spec = importlib.util.spec_from_file_location(BARE_MODULE, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the Eraser client -----------------------------------------------------------------


@dataclass
class JobRun:
    """One latency job, timed by the client (perf_counter seconds)."""

    job_id: str
    start: float
    submitted: float
    dispatch_sent: float
    seen_terminal: float
    status: str

    @property
    def total(self) -> float:
        return self.seen_terminal - self.start


class EraserClient:
    """Submits jobs in this process the way ``eraser submit`` does and polls the job
    store for their outcome. Create it only once the environment names this run's job
    store, broker and registry: the Celery app reads its settings when imported."""

    def __init__(self) -> None:
        from tasks.submit import submit, submit_and_dispatch  # noqa: PLC0415 - see above
        from worker.app import app  # noqa: PLC0415

        get_settings.cache_clear()
        self.settings = get_settings()
        self.app = app
        self.registry = load_registry(self.settings.config)
        self.store = JobStore(create_engine(self.settings.database_url))
        self._submit = submit
        self._submit_and_dispatch = submit_and_dispatch
        self.poll_engine = create_engine(
            self.settings.database_url, pool_size=1, isolation_level="AUTOCOMMIT"
        )
        self.poll = self.poll_engine.connect()
        self.counter = 0

    def close(self) -> None:
        self.poll.close()
        self.poll_engine.dispose()
        self.store.dispose()

    def new_subject(self) -> str:
        """A subject value that no target database holds."""
        self.counter += 1
        return f"absent-{os.getpid()}-{self.counter}-{uuid.uuid4().hex[:8]}"

    def request(self, services: Sequence[str] = ()) -> ErasureRequest:
        """An ``ErasureRequest`` of a new empty subject."""
        return ErasureRequest(
            subject_kind=SUBJECT_KIND,
            subject_value=self.new_subject(),
            services=list(services),
            requested_by="bench",
        )

    def submit_only(self, services: Sequence[str] = ()) -> Job:
        """``submit()`` without dispatch (for the in-process breakdown)."""
        job, created = self._submit(self.store, self.registry, self.request(services))
        assert created
        return job

    def submit(self, services: Sequence[str] = ()) -> tuple[str, float, float]:
        """Submit and dispatch as ``eraser submit`` does (the job and its dispatch
        stamp in one transaction, then the chord); returns (job id, perf when done,
        the same)."""
        job, created = self._submit_and_dispatch(
            self.store, self.registry, self.request(services), 86400, self.settings.default_queue
        )
        assert created
        sent = time.perf_counter()
        return job.id, sent, sent

    def status(self, job_id: str) -> str:
        row = self.poll.exec_driver_sql(
            "SELECT status FROM eraser_jobs WHERE id = %s", (job_id,)
        ).scalar_one()
        return str(row)

    def wait(self, job_id: str, timeout: float = 60) -> tuple[str, float]:
        """Poll every ``POLL_SECONDS`` until the job is terminal; (status, perf time)."""
        deadline = time.perf_counter() + timeout
        while True:
            status = self.status(job_id)
            now = time.perf_counter()
            if status in TERMINAL:
                return status, now
            if now > deadline:
                raise TimeoutError(f"job {job_id} still {status} after {timeout} s")
            time.sleep(POLL_SECONDS)

    def run_job(self, services: Sequence[str] = ()) -> JobRun:
        start = time.perf_counter()
        job_id, submitted, sent = self.submit(services)
        status, seen = self.wait(job_id)
        return JobRun(job_id, start, submitted, sent, seen, status)

    def terminal_count(self, job_ids: list[str]) -> tuple[int, int]:
        """(terminal, succeeded) among ``job_ids``."""
        row = self.poll.exec_driver_sql(
            "SELECT count(*) FILTER (WHERE status IN %s), "
            "count(*) FILTER (WHERE status = 'succeeded') FROM eraser_jobs WHERE id = ANY(%s)",
            (TERMINAL, job_ids),
        ).one()
        return int(row[0]), int(row[1])

    def jobs(self, job_ids: list[str]) -> dict[str, Job]:
        with self.store.transaction() as session:
            found = session.scalars(sa.select(Job).where(Job.id.in_(job_ids))).all()
            for job in found:
                _ = job.tasks  # loaded before the session closes
            return {job.id: job for job in found}


# --- measurements ----------------------------------------------------------------------


@dataclass
class Throughput:
    jobs: int
    seconds: float
    submit_seconds: float
    ok: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def eraser_throughput(client: EraserClient, jobs: int) -> Throughput:
    """Submit ``jobs`` one-service jobs back to back, then wait until all are terminal."""
    ids: list[str] = []
    start = time.perf_counter()
    for i in range(jobs):
        job_id, _, _ = client.submit([SERVICES[i % len(SERVICES)]])
        ids.append(job_id)
    submitted = time.perf_counter()
    deadline = submitted + 120 + jobs
    while True:
        done, ok = client.terminal_count(ids)
        if done == jobs:
            end = time.perf_counter()
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {done} of {jobs} jobs ended")
        time.sleep(COUNT_POLL_SECONDS)
    return Throughput(jobs, end - start, submitted - start, ok)


def bare_chord(bare: ModuleType, width: int) -> float:
    """One bare chord of ``width`` no-op tasks: apply -> the body's result is read."""
    start = time.perf_counter()
    result = chord([bare.noop.si(k) for k in range(width)])(bare.done.s())
    got = result.get(timeout=60)
    elapsed = time.perf_counter() - start
    assert got == width
    return elapsed


def bare_throughput(bare: ModuleType, jobs: int) -> Throughput:
    """Apply ``jobs`` chords of one no-op task back to back, then read every result."""
    start = time.perf_counter()
    results = [chord([bare.noop.si(i)])(bare.done.s()) for i in range(jobs)]
    submitted = time.perf_counter()
    ok = sum(1 for r in results if r.get(timeout=120 + jobs) == 1)
    end = time.perf_counter()
    return Throughput(jobs, end - start, submitted - start, ok)


@dataclass
class LatencyRun:
    """Eraser jobs and bare chords of the same width, measured in alternating blocks."""

    eraser: list[JobRun]
    bare: list[float]
    eraser_cpu: CpuAccount
    bare_cpu: CpuAccount

    @property
    def eraser_seconds(self) -> list[float]:
        return [r.total for r in self.eraser]


def interleaved_latency(
    client: EraserClient,
    bare: ModuleType,
    meter: CpuMeter,
    jobs: int,
    warmup: int,
    services: Sequence[str],
) -> LatencyRun:
    """``jobs`` of each, one at a time, alternating blocks of ``LATENCY_BLOCK`` bare
    chords and Eraser jobs, so that a change in the machine's load hits both alike."""
    width = len(services)
    for _ in range(warmup):
        bare_chord(bare, width)
        client.run_job(services)
    run = LatencyRun([], [], CpuAccount("Eraser jobs"), CpuAccount("bare chords"))
    while len(run.eraser) < jobs:
        n = min(LATENCY_BLOCK, jobs - len(run.eraser))
        with meter.account(run.bare_cpu):
            run.bare += [bare_chord(bare, width) for _ in range(n)]
        with meter.account(run.eraser_cpu):
            run.eraser += [client.run_job(services) for _ in range(n)]
    return run


@dataclass
class ThroughputRun:
    eraser: list[Throughput]
    bare: list[Throughput]
    eraser_cpu: CpuAccount
    bare_cpu: CpuAccount


def alternating_throughput(
    client: EraserClient, bare: ModuleType, meter: CpuMeter, jobs: int, rounds: int
) -> ThroughputRun:
    """``rounds`` x (a burst of bare chords, then a burst of Eraser jobs)."""
    run = ThroughputRun([], [], CpuAccount("Eraser jobs"), CpuAccount("bare chords"))
    for _ in range(rounds):
        with meter.account(run.bare_cpu):
            run.bare.append(bare_throughput(bare, jobs))
        with meter.account(run.eraser_cpu):
            run.eraser.append(eraser_throughput(client, jobs))
    return run


def overall(rounds: Sequence[Throughput]) -> Throughput:
    """All rounds as one: total jobs over total time."""
    return Throughput(
        sum(r.jobs for r in rounds),
        sum(r.seconds for r in rounds),
        sum(r.submit_seconds for r in rounds),
        sum(r.ok for r in rounds),
    )


def disturbance(accounts: Sequence[CpuAccount]) -> list[str]:
    """Warnings for stretches where other processes used much of the machine."""
    lines = []
    for acc in accounts:
        share = acc.other / acc.wall if acc.wall else 0.0
        if share > DISTURBED:
            lines.append(
                f"  WARNING: other processes used {share:.0%} of a CPU during {acc.label}"
                " (see 'everything else'): the figures are disturbed"
            )
    return lines


# --- where the time goes ---------------------------------------------------------------


STAGES = (
    ("submit_and_dispatch(): job committed, chord sent (client)", "submit"),
    ("dispatch stamp (in that commit) -> first task starts", "queue"),
    ("erase phase: first task start -> last task end", "erase"),
    ("last task end -> finalize_job committed", "finalize"),
    ("committed -> client sees it (poll)", "poll"),
)


def stage_breakdown(
    runs: list[JobRun], jobs: dict[str, Job], clock: WallClock, detail: bool = True
) -> list[str]:
    """Each job's end-to-end time cut at the job store's timestamps (p50 and mean)."""
    stages: dict[str, list[float]] = {key: [] for _, key in STAGES}
    task_runtimes: list[float] = []
    task_sums: list[float] = []
    busy_fraction: list[float] = []
    for run in runs:
        job = jobs[run.job_id]
        starts = [epoch(t.started_at) for t in job.tasks]
        ends = [epoch(t.finished_at) for t in job.tasks]
        runtimes = [e - s for s, e in zip(starts, ends, strict=True)]
        task_runtimes += runtimes
        task_sums.append(sum(runtimes))
        first, last = min(starts), max(ends)
        busy_fraction.append(sum(runtimes) / (CONCURRENCY * max(last - first, 1e-9)))
        dispatched = epoch(job.dispatched_at)
        stages["submit"].append(run.dispatch_sent - run.start)
        stages["queue"].append(first - dispatched)
        stages["erase"].append(last - first)
        stages["finalize"].append(epoch(job.finished_at) - last)
        stages["poll"].append(clock.wall(run.seen_terminal) - epoch(job.finished_at))
    total = [r.total for r in runs]
    lines = [f"    {'stage':<52} {'p50':>11} {'mean':>11}"]
    for label, key in STAGES:
        values = stages[key]
        mean = sum(values) / len(values)
        lines.append(f"    {label:<52} {ms(percentile(values, 50))} {ms(mean)}")
    lines.append(
        f"    {'end to end':<52} {ms(percentile(total, 50))} {ms(sum(total) / len(total))}"
    )
    if not detail:
        return lines
    tasks = len(next(iter(jobs.values())).tasks) if jobs else 0
    lines += [
        f"    erase_service as recorded (started_at -> finished_at): {summary(task_runtimes)}",
        f"    sum of the {tasks} task runtimes per job: p50"
        f" {percentile(task_sums, 50) * 1000:.1f} ms (/{CONCURRENCY} ="
        f" {percentile(task_sums, 50) / CONCURRENCY * 1000:.1f} ms if both pool processes were"
        f" always busy); pool busy in the erase phase: {percentile(busy_fraction, 50):.0%} (p50)",
    ]
    return lines


@dataclass
class Counted:
    """SQL statements sent through an engine (counted with a cursor event)."""

    statements: int = 0

    def attach(self, engine: sa.Engine) -> None:
        def count(*_args: Any) -> None:
            self.statements += 1

        event.listen(engine, "before_cursor_execute", count)


class GcWatch:
    """Garbage-collector pauses and the growth of live objects in this process."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.objects_before = 0
        self.objects_after = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def __enter__(self) -> GcWatch:
        gc.collect()
        self.objects_before = len(gc.get_objects())
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)
        gc.collect()
        self.objects_after = len(gc.get_objects())


def pool_rss(proc: subprocess.Popen[bytes]) -> list[float]:
    """Resident memory of a worker's pool processes, in MB."""
    try:
        children = psutil.Process(proc.pid).children()
        return sorted(round(c.memory_info().rss / 2**20, 1) for c in children)
    except psutil.Error:
        return []


@contextmanager
def stopwatch(samples: list[float], keep: bool = True) -> Iterator[None]:
    """Append the block's duration to ``samples`` (unless ``keep`` is false)."""
    start = time.perf_counter()
    yield
    if keep:
        samples.append(time.perf_counter() - start)


class InProcessRun:
    """Without Celery: 12-service jobs run task by task in this process on warm engines
    (``execute_task`` for every service, then ``finalize``), and after each job the
    engine's parts timed separately the way ``worker.service.run_service`` runs them."""

    PARTS = ("submit", "task", "finalize", "plan_service", "reflect", "plan", "erase", "job")

    def __init__(self, client: EraserClient, estate: Estate) -> None:
        self.client = client
        self.target_sql = Counted()
        self.store_sql = Counted()
        self.store_sql.attach(client.store.engine)
        self.engines: dict[str, sa.Engine] = {}
        for service, url in estate.service_urls.items():
            self.engines[service] = create_engine(url, pool_size=2, max_overflow=2)
            self.target_sql.attach(self.engines[service])
        self.parts: dict[str, list[float]] = {k: [] for k in self.PARTS}
        self.target_per_task: list[int] = []
        self.store_per_task: list[int] = []
        self.tasks = 0
        #: Plans kept between tasks, as a worker keeps them.
        self.plans = PlanCache()

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()

    def job(self, keep: bool) -> None:
        """One 12-service job, serially; timings kept when ``keep``."""
        from tasks.erase import execute_task  # noqa: PLC0415 - after the env is set
        from tasks.finalize import finalize  # noqa: PLC0415

        client, parts = self.client, self.parts
        with stopwatch(parts["job"], keep):
            with stopwatch(parts["submit"], keep):
                job = client.submit_only()
            for service in SERVICES:
                target_before = self.target_sql.statements
                store_before = self.store_sql.statements
                with stopwatch(parts["task"], keep):
                    execute_task(
                        client.store,
                        client.registry,
                        client.settings,
                        job.id,
                        service,
                        engine_for=self.engines.__getitem__,
                        plans=self.plans,
                    )
                self.tasks += 1
                if keep:
                    self.target_per_task.append(self.target_sql.statements - target_before)
                    self.store_per_task.append(self.store_sql.statements - store_before)
            with stopwatch(parts["finalize"], keep):
                finalize(client.store, job.id)

    def engine_parts(self, name: str, keep: bool) -> None:
        """The engine's part of one task, timed piece by piece: ``plan_service()`` as
        ``run_service`` calls it, inside it ``reflect()`` and ``build_plan()``, then
        ``erase()`` of an empty subject with that plan."""
        registry, parts = self.client.registry, self.parts
        service = registry.services[name]
        engine = self.engines[name]
        columns = registry.subject_columns(name, SUBJECT_KIND)
        with stopwatch(parts["plan_service"], keep):
            plan = plan_service(engine, service, columns)
        with stopwatch(parts["reflect"], keep):
            catalog = reflect(engine, service.schemas or None)
        with stopwatch(parts["plan"], keep):
            build_plan(catalog, columns, service.policies(), [])
        options = ExecutionOptions(
            batch_size=service.batch_size, lock_timeout_ms=service.lock_timeout_ms
        )
        with stopwatch(parts["erase"], keep):
            erase(
                engine,
                plan,
                self.client.new_subject(),
                options,
                None,
                lock_scope=(name, SUBJECT_KIND),
            )

    def report(self, jobs: int, watch: GcWatch) -> list[str]:
        p50 = {k: percentile(v, 50) for k, v in self.parts.items()}
        engine_part = p50["plan_service"] + p50["erase"]
        growth = (watch.objects_after - watch.objects_before) / max(self.tasks, 1)
        gen2 = watch.pauses[2]
        return [
            f"  In this process, no Celery, warm engines, {jobs} jobs x 12 services (p50):",
            f"    submit()                                   {ms(p50['submit'])}",
            f"    execute_task() (one erase_service body)    {ms(p50['task'])}"
            f"   [{summary(self.parts['task'])}]",
            f"      plan_service()                           {ms(p50['plan_service'])}",
            f"        of which reflect() of the schema       {ms(p50['reflect'])}",
            f"        of which build_plan()                  {ms(p50['plan'])}",
            f"      erase() (lock, preflight, walk, verify)  {ms(p50['erase'])}",
            f"      job store (2 transactions) and the rest  {ms(p50['task'] - engine_part)}",
            f"    finalize()                                 {ms(p50['finalize'])}",
            f"    whole 12-service job, serially             {ms(p50['job'])}"
            f"  (/{CONCURRENCY} = {ms(p50['job'] / CONCURRENCY).strip()} on a perfect pool)",
            f"    SQL statements per task: {percentile(self.target_per_task, 50):.0f} on the"
            f" target database, {percentile(self.store_per_task, 50):.0f} on the job store",
            f"    live Python objects: {watch.objects_before} -> {watch.objects_after} after"
            f" {self.tasks} tasks ({growth:+.0f} per task, after gc.collect());"
            f" {len(gen2)} full (gen 2) collections, longest {max(gen2, default=0) * 1000:.0f} ms,"
            f" {sum(gen2) * 1000:.0f} ms in all",
        ]


def inprocess_breakdown(client: EraserClient, estate: Estate, jobs: int) -> list[str]:
    """``jobs`` in-process 12-service jobs after two warm-up jobs; the report lines."""
    run = InProcessRun(client, estate)
    watch = GcWatch()
    profile = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
    try:
        with watch:
            for round_no in range(jobs + 2):
                keep = round_no >= 2
                if profile is not None and keep:
                    profile.enable()
                run.job(keep)
                if profile is not None:
                    profile.disable()
                run.engine_parts(SERVICES[round_no % len(SERVICES)], keep)
    finally:
        run.close()
    if profile is not None:
        # BENCH_PROFILE=1: where the in-process jobs' time went, to stderr.
        pstats.Stats(profile, stream=sys.stderr).sort_stats(
            os.environ.get("BENCH_PROFILE_SORT", "cumulative")
        ).print_stats(70)
    return run.report(jobs, watch)


# --- the run ---------------------------------------------------------------------------


@dataclass
class Options:
    jobs: int
    throughput_jobs: int
    rounds: int
    warmup: int
    single_jobs: int
    inprocess_jobs: int


def machine_context(label: str) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"  load average {label}: {load}"


def server_versions(admin: sa.Engine) -> str:
    with admin.connect() as conn:
        pg = conn.exec_driver_sql("SHOW server_version").scalar_one()
    client = redis.Redis.from_url(f"{REDIS_URL}/{BROKER_DB}")
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    return (
        f"  PostgreSQL {pg}, Redis {info.get('redis_version')}, Celery {celery.__version__},"
        f" SQLAlchemy {sa.__version__}, Python {platform.python_version()}"
    )


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that the cleanup runs."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(opts: Options) -> bool:
    """The whole benchmark; returns whether both targets were met."""
    print("Eraser orchestration benchmark")
    print(f"  {platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}")
    print(machine_context("at start"))
    for line in busy_processes():
        print(f"  busy at start: {line}")
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    workers: list[Worker] = []
    estate: Estate | None = None
    client: EraserClient | None = None
    prefix = f"{DB_PREFIX}{os.getpid()}_"
    saved_env = dict(os.environ)
    try:
        with tempfile.TemporaryDirectory(prefix="eraser-obench-") as tmp_name:
            tmp = Path(tmp_name)
            flush_redis()
            print(server_versions(admin))
            started = time.perf_counter()
            estate = create_estate(admin)
            print(
                f"  {len(SERVICES)} target databases + job store created and migrated in"
                f" {time.perf_counter() - started:.1f} s ({prefix}*)"
            )
            registry_path = tmp / "services.toml"
            registry_path.write_text(registry_toml(), encoding="utf-8")
            eraser_env = {
                "ERASER_DATABASE_URL": estate.store_url,
                "ERASER_BROKER_URL": f"{REDIS_URL}/{BROKER_DB}",
                "ERASER_RESULT_BACKEND": f"{REDIS_URL}/{RESULT_DB}",
                "ERASER_CONFIG": str(registry_path),
                **{env_var(s): url for s, url in estate.service_urls.items()},
                # A deployment's secrets, fresh for this run (eraser secrets generate).
                **new_secrets(),
            }
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("ERASER_")}
            os.environ.clear()
            os.environ.update(base_env | eraser_env)

            node = f"obench{os.getpid()}"
            host = socket.gethostname()
            eraser_worker = start_worker(
                "eraser",
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "worker",
                    "-c",
                    str(CONCURRENCY),
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "-n",
                    f"{node}-eraser@%h",
                ],
                base_env | eraser_env | {"PYTHONPATH": str(ROOT)},
                ROOT,
                tmp / "eraser-worker.log",
            )
            workers.append(eraser_worker)
            bare = load_bare_app(tmp)
            bare_worker = start_worker(
                "bare",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    BARE_MODULE,
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    str(CONCURRENCY),
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "-Q",
                    BARE_QUEUE,
                    "-n",
                    f"{node}-bare@%h",
                ],
                base_env | {"PYTHONPATH": str(tmp)},
                tmp,
                tmp / "bare-worker.log",
            )
            workers.append(bare_worker)
            client = EraserClient()
            ready_e = wait_ready(eraser_worker, client.app, f"{node}-eraser@{host}")
            ready_b = wait_ready(bare_worker, bare.app, f"{node}-bare@{host}")
            print(
                f"  workers ready (answered a ping) after {ready_e:.1f} s (Eraser) and"
                f" {ready_b:.1f} s (bare); prefork, concurrency {CONCURRENCY}, prefetch 1,"
                " acks_late"
            )
            meter = CpuMeter({"eraser worker": eraser_worker.proc, "bare worker": bare_worker.proc})
            clock = WallClock()
            ok = measure(opts, client, bare, meter, clock, estate)
            for worker in workers:
                if worker.proc.poll() is not None:
                    print(f"  the {worker.name} worker died:\n{worker.log_tail()}")
                    ok = False
            print(machine_context("at end"))
            return ok
    finally:
        for worker in workers:
            stop_worker(worker)
        if client is not None:
            client.close()
        os.environ.clear()
        os.environ.update(saved_env)
        dropped = drop_databases(admin, prefix)
        admin.dispose()
        flush_redis()
        print(
            f"  cleaned up: workers stopped, {len(dropped)} databases dropped, Redis 13/14 flushed"
        )


def measure(
    opts: Options,
    client: EraserClient,
    bare: ModuleType,
    meter: CpuMeter,
    clock: WallClock,
    estate: Estate,
) -> bool:
    width = len(SERVICES)
    rss: list[tuple[str, dict[str, list[float]]]] = []

    def snapshot(label: str) -> None:
        rss.append((label, {name: pool_rss(proc) for name, proc in meter.workers.items()}))

    snapshot("ready")
    print()
    print(
        f"1. Latency, {opts.jobs} jobs one at a time ({opts.warmup} warm-up jobs first), empty"
        f" subject, {width} services; bare chords and Eraser jobs alternate in blocks of"
        f" {LATENCY_BLOCK}"
    )
    lat = interleaved_latency(client, bare, meter, opts.jobs, opts.warmup, SERVICES)
    bad = [r for r in lat.eraser if r.status != "succeeded"]
    eraser_lat = lat.eraser_seconds
    print(f"  bare chord, {width} no-op tasks, apply -> body result:   {summary(lat.bare)}")
    print(
        f"  Eraser job, submit -> succeeded (poll {POLL_SECONDS * 1000:.0f} ms):"
        f"   {summary(eraser_lat)}"
    )
    if bad:
        print(f"  WARNING: {len(bad)} jobs did not succeed: {sorted({r.status for r in bad})}")
    ratio = percentile(eraser_lat, 50) / percentile(lat.bare, 50)
    lat_ok = ratio <= LATENCY_TARGET and not bad
    print(
        f"  p50 ratio Eraser / bare: {ratio:.2f}x (target <= {LATENCY_TARGET:.0f}x):"
        f" {verdict(lat_ok)}"
    )
    p99_ratio = percentile(eraser_lat, 99) / percentile(lat.bare, 99)
    print(f"  p99 ratio Eraser / bare: {p99_ratio:.2f}x")
    snapshot("after latency")

    print()
    print(
        f"2. Throughput, one worker (concurrency {CONCURRENCY}): {opts.rounds} round(s) of"
        f" {opts.throughput_jobs} one-service jobs (services in turn), empty subject,"
        " submitted back to back; bare and Eraser bursts alternate"
    )
    tp = alternating_throughput(client, bare, meter, opts.throughput_jobs, opts.rounds)
    bare_tp, eraser_tp = overall(tp.bare), overall(tp.eraser)
    for label, rounds, total in (
        ("bare chord (1 no-op task)", tp.bare, bare_tp),
        ("Eraser job (1 service)", tp.eraser, eraser_tp),
    ):
        each = ", ".join(f"{r.rate:.1f}" for r in rounds)
        print(
            f"  {label:<26} {total.rate:7.1f} jobs/s  (rounds: {each}; submitting took"
            f" {total.submit_seconds / total.jobs * 1000:.1f} ms per job;"
            f" {total.ok}/{total.jobs} ok)"
        )
    tp_ratio = eraser_tp.rate / bare_tp.rate
    tp_ok = tp_ratio >= THROUGHPUT_TARGET and eraser_tp.ok == eraser_tp.jobs
    print(
        f"  rate ratio Eraser / bare: {tp_ratio:.2f} (target >= {THROUGHPUT_TARGET:.2f}):"
        f" {verdict(tp_ok)}"
    )
    snapshot("after throughput")
    one = interleaved_latency(client, bare, meter, opts.single_jobs, 2, SERVICES[:1])
    bare_mean = sum(one.bare) / len(one.bare)
    eraser_mean = sum(one.eraser_seconds) / len(one.eraser_seconds)
    print(
        f"  for reference, one at a time ({opts.single_jobs} each): bare 1-task chord"
        f" p50 {percentile(one.bare, 50) * 1000:.1f} ms = {1 / bare_mean:.1f}/s;"
        f" Eraser 1-service job p50 {percentile(one.eraser_seconds, 50) * 1000:.1f} ms"
        f" = {1 / eraser_mean:.1f}/s"
    )

    print()
    print("3. Where the time goes")
    print(f"  Eraser latency jobs ({width} services):")
    for line in stage_breakdown(lat.eraser, client.jobs([r.job_id for r in lat.eraser]), clock):
        print(line)
    print("  1-service jobs one at a time:")
    for line in stage_breakdown(
        one.eraser, client.jobs([r.job_id for r in one.eraser]), clock, detail=False
    ):
        print(line)
    accounts = (lat.bare_cpu, lat.eraser_cpu, tp.bare_cpu, tp.eraser_cpu)
    print(f"  latency run ({width} services):")
    for line in (*lat.bare_cpu.report(opts.jobs), *lat.eraser_cpu.report(opts.jobs)):
        print(line)
    tp_jobs = opts.throughput_jobs * opts.rounds
    print("  throughput run (1 service):")
    for line in (*tp.bare_cpu.report(tp_jobs), *tp.eraser_cpu.report(tp_jobs)):
        print(line)
    for name in meter.workers:
        steps = " -> ".join(f"{label} {sizes[name]}" for label, sizes in rss)
        print(f"  {name} pool processes, RSS in MB: {steps}")
    for line in inprocess_breakdown(client, estate, opts.inprocess_jobs):
        print(line)
    warnings = disturbance(accounts)
    for line in warnings:
        print(line)

    print()
    print(
        f"Summary: latency p50 {percentile(eraser_lat, 50) * 1000:.1f} ms vs"
        f" {percentile(lat.bare, 50) * 1000:.1f} ms bare ({ratio:.2f}x, {verdict(lat_ok)});"
        f" throughput {eraser_tp.rate:.1f} vs {bare_tp.rate:.1f} jobs/s"
        f" ({tp_ratio:.2f}, {verdict(tp_ok)})" + (" [disturbed]" if warnings else "")
    )
    return lat_ok and tp_ok


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=None, help="latency jobs (default 50)")
    parser.add_argument(
        "--throughput-jobs", type=int, default=None, help="throughput jobs (default 200)"
    )
    parser.add_argument("--quick", action="store_true", help="15 latency and 60 throughput jobs")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    jobs = args.jobs if args.jobs is not None else (15 if quick else 50)
    throughput = (
        args.throughput_jobs if args.throughput_jobs is not None else (60 if quick else 200)
    )
    if jobs < 1 or throughput < 1:
        parser.error("--jobs and --throughput-jobs must be positive")
    return Options(
        jobs=jobs,
        throughput_jobs=throughput,
        rounds=1 if quick else 2,
        warmup=3 if quick else 5,
        single_jobs=10 if quick else 30,
        inprocess_jobs=5 if quick else 15,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    with sigterm_as_exit():
        met = run(opts)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
