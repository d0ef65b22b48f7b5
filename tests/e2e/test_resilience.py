"""Fault injection against a real deployment (``tests/e2e/rig.py``): real worker
processes killed with SIGKILL, connections terminated, locks held, a deadlock
provoked, privileges missing, Redis flushed. Every job must reach a true terminal
state, nothing of other subjects may change, and no task may run twice at once."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.rig import ROOT, Rig, build_rig
from tests.redis_dbs import need_redis

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    need_redis()
    gen = build_rig(tmp_path_factory.mktemp("rig"), tenants=12)
    rig = next(gen)
    rig.start_worker()
    rig.start_beat()
    try:
        yield rig
    finally:
        gen.close()


def eraser(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=rig.env,
        cwd=ROOT,
        check=False,
    )


class DeleteSampler(threading.Thread):
    """Samples the big database: how many of Eraser's DELETE statements run at once
    (more than one would mean a task running twice at the same time)."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(daemon=True)
        self.engine = rig.big.engine
        self.database = rig.big.engine.url.database
        self.most = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stopping.is_set():
                active = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"
                        " AND application_name = 'eraser' AND state = 'active'"
                        " AND query ILIKE 'DELETE%'"
                    ),
                    {"d": self.database},
                ).scalar_one()
                conn.rollback()
                self.most = max(self.most, int(active))
                self.samples += 1
                time.sleep(0.01)


def outcomes(rig: Rig, job_id: str, service: str) -> list[str]:
    return [a.outcome for a in rig.attempts(job_id, service)]


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_a_row_lock_held_past_the_lock_timeout_is_retried(rig: Rig) -> None:
    tenant = rig.tenants[0]
    with rig.locky.engine.connect() as holder:
        holder.execute(
            sa.text(
                "SELECT id FROM notes WHERE tenant_key = :t ORDER BY id DESC LIMIT 1 FOR UPDATE"
            ),
            {"t": tenant},
        )
        job = rig.submit(tenant, ["locky"])
        # The service's lock timeout is 3 s: hold the row past it, then let go.
        wait_for(lambda: "retry" in outcomes(rig, job, "locky"), timeout=30)
        holder.rollback()
    view = rig.wait(job)
    assert view.status == "succeeded", view
    task = view.tasks[0]
    assert task.rows == 30
    assert task.verified
    retries = [a for a in task.history if a.outcome == "retry"]
    assert retries
    assert "lock not available" in (retries[0].error or "")
    assert task.history[-1].outcome == "succeeded"
    assert rig.rows_left(tenant, ("locky",)) == 0


def test_a_deadlock_provoked_on_purpose_is_retried(rig: Rig) -> None:
    tenant = rig.tenants[1]
    with rig.locky.engine.connect() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT id FROM notes WHERE tenant_key = :t ORDER BY id"), {"t": tenant}
            )
        ]
    low, high = ids[0], ids[-1]
    database = rig.locky.engine.url.database
    with rig.locky.engine.connect() as holder:
        # This session never runs the deadlock check first: Eraser's backend does
        # (after the server's deadlock_timeout) and is the one aborted.
        holder.execute(sa.text("SET deadlock_timeout = '20s'"))
        holder.execute(sa.text("SELECT 1 FROM notes WHERE id = :i FOR UPDATE"), {"i": high})
        job = rig.submit(tenant, ["locky"])

        def eraser_waits() -> bool:
            with rig.locky.engine.connect() as probe:
                return bool(
                    probe.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"
                            " AND application_name = 'eraser' AND wait_event_type = 'Lock'"
                        ),
                        {"d": database},
                    ).scalar_one()
                )

        wait_for(eraser_waits, timeout=30)
        # Eraser holds ``low`` (deleted earlier in the same statement) and waits for
        # ``high``; asking for ``low`` closes the cycle.
        holder.execute(sa.text("SELECT 1 FROM notes WHERE id = :i FOR UPDATE"), {"i": low})
        holder.rollback()
    view = rig.wait(job)
    assert view.status == "succeeded", view
    errors = [a.error or "" for a in view.tasks[0].history if a.outcome == "retry"]
    assert any("deadlock detected" in e for e in errors), view.tasks[0].history
    assert view.tasks[0].rows == 30


def test_a_terminated_connection_mid_batch_is_retried(rig: Rig) -> None:
    tenant = rig.tenants[2]
    before = rig.fingerprint({tenant})
    job = rig.submit(tenant, ["big", "small"])
    database = rig.big.engine.url.database
    wait_for(lambda: "running" in outcomes(rig, job, "big"), timeout=30)
    time.sleep(0.5)
    with rig.big.engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :d AND application_name = 'eraser'"
                " AND pid <> pg_backend_pid()"
            ),
            {"d": database},
        ).scalar_one()
    assert killed >= 1
    view = rig.wait(job)
    assert view.status == "succeeded", view
    big = next(t for t in view.tasks if t.service == "big")
    assert any(a.outcome == "retry" for a in big.history), big.history
    assert rig.rows_left(tenant, ("big", "small")) == 0
    assert rig.fingerprint({tenant}) == before


def test_a_permanent_fault_is_dead_lettered_and_retry_reruns_only_that_service(rig: Rig) -> None:
    tenant = rig.tenants[3]
    job = rig.submit(tenant, ["limited", "small"])
    view = rig.wait(job)
    assert view.status == "partially_failed", view
    tasks = {t.service: t for t in view.tasks}
    assert tasks["small"].status == "succeeded"
    assert tasks["limited"].status == "failed"
    assert tasks["limited"].error == (
        "permission denied (SQLSTATE 42501): permission denied for table notes"
    )
    assert [a.outcome for a in tasks["limited"].history] == ["failed"]  # not retried
    letters = json.loads(eraser(rig, "dead-letters", "list", "--job", job, "--json").stdout)
    assert [(d["service"], d["reason"]) for d in letters] == [("limited", "permanent")]
    shown = json.loads(eraser(rig, "dead-letters", "show", str(letters[0]["id"]), "--json").stdout)
    assert "tenant-" not in (shown["traceback"] or "")

    rig.locky.run(f"GRANT DELETE ON notes TO {rig.limited_role}")
    done = eraser(rig, "retry", job, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    after = json.loads(done.stdout)
    tasks_after = {t["service"]: t for t in after["tasks"]}
    assert after["status"] == "succeeded"
    assert tasks_after["limited"]["rows"] == 30
    assert [a["outcome"] for a in tasks_after["limited"]["history"]] == ["failed", "succeeded"]
    # The service that had succeeded was not run again.
    assert tasks_after["small"]["attempts"] == 1
    again = json.loads(eraser(rig, "dead-letters", "list", "--job", job, "--json").stdout)
    assert again == []  # replayed
    assert eraser(rig, "retry", job).returncode == 2  # nothing left to retry


def test_kill_9_of_a_worker_child_or_the_whole_worker_resumes(rig: Rig) -> None:
    trials = rig.tenants[4:9]
    rng = random.Random(42)
    sampler = DeleteSampler(rig)
    sampler.start()
    resumes: list[float] = []
    try:
        for n, tenant in enumerate(trials):
            before = rig.fingerprint({tenant})
            initial = rig.rows_left(tenant, ("big",))
            job = rig.submit(tenant, ["big"])
            wait_for(lambda j=job: "running" in outcomes(rig, j, "big"), timeout=60)
            time.sleep(rng.uniform(0.2, 2.5))  # somewhere in the erasure
            running = [a for a in rig.attempts(job, "big") if a.outcome == "running"]
            if not running:
                continue  # between two slices: the next trial kills elsewhere
            killed_at = time.time()
            worker = rig.workers[-1]
            if n % 2 == 0:
                pid = int((running[-1].worker or "").rsplit(" ", 1)[-1])
                rig.kill_pid(pid)
            else:
                rig.kill_worker(worker)
                rig.start_worker()
            view = rig.wait(job, timeout=120)
            assert view.status == "succeeded", view
            history = rig.attempts(job, "big")
            lost = [i for i, a in enumerate(history) if a.outcome == "lost"]
            assert lost, [a.outcome for a in history]
            resumed = history[lost[0] + 1].started_at.timestamp() - killed_at
            resumes.append(resumed)
            assert resumed < 30, f"resumed after {resumed:.1f}s"
            assert rig.rows_left(tenant, ("big",)) == 0
            assert rig.fingerprint({tenant}) == before
            task = view.tasks[0]
            assert task.verified
            assert 0 < task.rows <= initial
    finally:
        sampler.stopping.set()
        sampler.join()
    print(f"kill trials: resumed after {', '.join(f'{r:.1f}s' for r in resumes)}")
    assert len(resumes) >= 4
    assert sampler.samples > 100
    assert sampler.most <= 1, "two executions deleted at the same time"


def test_flushing_redis_mid_job_still_ends_the_job(rig: Rig) -> None:
    tenant, queued = rig.tenants[9], rig.tenants[10]
    before = rig.fingerprint({tenant, queued})
    running = rig.submit(tenant, ["big", "small"])
    wait_for(lambda: "running" in outcomes(rig, running, "big"), timeout=60)
    waiting = rig.submit(queued, ["small", "locky"])
    rig.flush_redis()  # messages, unacked copies, chord counters: all gone
    for job in (running, waiting):
        view = rig.wait(job, timeout=90)
        assert view.status == "succeeded", view
    assert rig.rows_left(tenant, ("big", "small")) == 0
    assert rig.rows_left(queued, ("small", "locky")) == 0
    assert rig.fingerprint({tenant, queued}) == before


def test_a_task_that_kills_its_worker_every_time_ends_as_a_dead_letter(rig: Rig) -> None:
    tenant = rig.tenants[11]
    job = rig.submit(tenant, ["big"])
    killed: set[int] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        view = rig.view(job)
        if view.status not in ("pending", "running"):
            break
        for attempt in rig.attempts(job, "big"):
            if attempt.outcome == "running" and attempt.id not in killed:
                killed.add(attempt.id)
                pid = int((attempt.worker or "").rsplit(" ", 1)[-1])
                rig.kill_pid(pid)
        time.sleep(0.05)
    view = rig.wait(job, timeout=5)
    assert view.status == "failed"
    task = view.tasks[0]
    assert "poison message" in (task.error or "")
    assert task.crashes == 3
    assert len(killed) == 3
    letters = json.loads(eraser(rig, "dead-letters", "list", "--job", job, "--json").stdout)
    assert [d["reason"] for d in letters] == ["poison"]
    # The worker survived its children's deaths and still works.
    other = rig.submit(rig.tenants[10], ["locky"])
    assert rig.wait(other).status == "succeeded"


def test_no_value_or_dsn_in_worker_logs(rig: Rig) -> None:
    logs = "".join(p.read_text(errors="replace") for p in Path(rig.tmp).glob("*.log"))
    assert logs
    for secret in [*rig.tenants, rig.big.url, rig.small.url, rig.locky.url]:
        assert secret not in logs
