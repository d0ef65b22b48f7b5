"""Eraser chaos run: many jobs, with workers killed, Redis flushed and database
connections terminated at random moments, and an account of how every job ended.

Run with ``python bench/chaos.py`` (``make chaos``; ``--jobs N``, ``--seed S``,
``--interval SECONDS`` between faults). It needs the local PostgreSQL, MariaDB and
Redis; it uses Redis databases 5 (broker) and 6 (results) and throw-away databases
``eraser_t<pid>_*``, all removed at the end, also on failure.

The deployment is ``tests/e2e/rig.py``'s: a PostgreSQL job store, an ``eraser beat``
reaper, ``eraser worker`` processes (concurrency 2), and three target databases
(``big`` on PostgreSQL, whose deletes are slowed so an erasure lasts seconds;
``small`` on MariaDB; ``locky`` on PostgreSQL). Each job erases its own tenant from
one to three of them. While jobs run, a fault is injected every ``--interval``
seconds (uniformly at random in [0.5, 1.5] times it), chosen at random among:

- ``kill-child``: ``kill -9`` of the pool process running an execution;
- ``kill-worker``: ``kill -9`` of the whole worker (a new one is started);
- ``flush``: ``FLUSHDB`` of the broker and result databases (messages, unacked
  copies and chord counters all gone);
- ``terminate``: ``pg_terminate_backend`` of Eraser's connections to ``big``.

Then it waits for every job to end, retries the jobs that ended with a dead letter
(a task killed too often is a poison message by design), and prints: jobs started,
jobs that reached a correct terminal state (``succeeded``, verified, and no row of the
subject left in the erased services), rows of other subjects changed (a fingerprint of
every tenant that no job erased, and of each job's tenant in the services the job did
not name: must be 0), orphans (child rows whose parent is gone: must be 0), how long
recovery took, and the faults injected. Exit status 1 if any job is incorrect.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.rig import Rig, build_rig

SERVICES = ("big", "small", "locky")
TERMINAL = ("succeeded", "partially_failed", "failed", "cancelled")


def orphans(rig: Rig) -> int:
    """Child rows whose parent row is gone (foreign keys forbid it; counted anyway)."""
    total = 0
    with rig.big.engine.connect() as conn:
        total += conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM projects p LEFT JOIN accounts a"
                " ON a.id = p.account_id WHERE a.id IS NULL)"
                " + (SELECT count(*) FROM items i LEFT JOIN projects p"
                " ON p.id = i.project_id WHERE p.id IS NULL)"
            )
        ).scalar_one()
    with rig.small.engine.connect() as conn:
        total += conn.execute(
            sa.text(
                "SELECT count(*) FROM deliveries d LEFT JOIN messages m"
                " ON m.id = d.message_id WHERE m.id IS NULL"
            )
        ).scalar_one()
    return int(total)


def inject(rig: Rig, fault: str, rng: random.Random) -> bool:
    """Inject one fault; returns False when there was nothing to hit."""
    if fault == "kill-child":
        running = []
        assert rig.store is not None
        with rig.store.engine.connect() as conn:
            running = [
                r[0]
                for r in conn.execute(
                    sa.text("SELECT worker FROM eraser_task_attempts WHERE outcome = 'running'")
                )
            ]
        if not running:
            return False
        rig.kill_pid(int(rng.choice(running).rsplit(" ", 1)[-1]))
        return True
    if fault == "kill-worker":
        rig.kill_worker(rig.workers[-1])
        rig.start_worker()
        return True
    if fault == "flush":
        rig.flush_redis()
        return True
    with rig.big.engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :d AND application_name = 'eraser'"
                " AND pid <> pg_backend_pid()"
            ),
            {"d": rig.big.engine.url.database},
        ).scalar_one()
    return bool(killed)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    controls = 4
    with tempfile.TemporaryDirectory(prefix="eraser-chaos-") as tmp:
        gen = build_rig(
            Path(tmp),
            tenants=args.jobs + controls,
            items=args.items,
            broker_db=5,
        )
        rig = next(gen)
        try:
            return _run(rig, args, rng, controls)
        finally:
            gen.close()


def _run(rig: Rig, args: argparse.Namespace, rng: random.Random, controls: int) -> int:
    rig.start_worker()
    rig.start_beat()
    subjects = rig.tenants[: args.jobs]
    plan = {t: sorted(rng.sample(SERVICES, rng.randint(1, 3))) for t in subjects}
    untouched = {
        t: [s for s in SERVICES if s not in plan[t]] for t in subjects
    }  # the job's tenant, in services it did not name
    before_controls = rig.fingerprint(set(subjects))
    before_rest = {t: rig.rows_left(t, tuple(untouched[t])) for t in subjects}
    started = time.monotonic()
    jobs: dict[str, str] = {}
    faults: Counter[str] = Counter()
    pending = list(subjects)
    next_fault = time.monotonic() + args.interval
    print(f"chaos: {args.jobs} jobs, a fault every ~{args.interval:g}s (seed {args.seed})")
    while pending or any(rig.view(j).status not in TERMINAL for j in jobs.values()):
        while (
            pending
            and sum(rig.view(j).status not in TERMINAL for j in jobs.values()) < args.parallel
        ):
            tenant = pending.pop(0)
            jobs[tenant] = rig.submit(tenant, plan[tenant])
        if time.monotonic() >= next_fault and (pending or len(faults) < 10_000):
            fault = rng.choice(["kill-child", "kill-child", "kill-worker", "flush", "terminate"])
            if inject(rig, fault, rng):
                faults[fault] += 1
            next_fault = time.monotonic() + args.interval * rng.uniform(0.5, 1.5)
        if time.monotonic() - started > args.timeout:
            print("chaos: timed out waiting for jobs", file=sys.stderr)
            break
        time.sleep(0.1)
    chaos_seconds = time.monotonic() - started

    first = {t: rig.view(j).status for t, j in jobs.items()}
    retried = 0
    for tenant, job in jobs.items():
        if first[tenant] in ("partially_failed", "failed"):
            retried += 1
            subprocess.run(  # noqa: S603 - our own CLI, our own job id
                [sys.executable, "-m", "api.cli", "retry", job, "--wait", "--timeout", "300"],
                env=rig.env,
                cwd=Path(__file__).resolve().parents[1],
                capture_output=True,
                check=False,
            )
    correct = 0
    wrong: list[str] = []
    lost_executions = 0
    retries = 0
    for tenant, job in jobs.items():
        view = rig.view(job)
        left = rig.rows_left(tenant, tuple(plan[tenant]))
        ok = view.status == "succeeded" and left == 0 and all(t.verified for t in view.tasks)
        lost_executions += sum(t.crashes for t in view.tasks)
        retries += sum(sum(1 for a in t.history if a.outcome == "retry") for t in view.tasks)
        if ok:
            correct += 1
        else:
            wrong.append(f"{job} {view.status} rows left {left}")
    changed = 0
    if rig.fingerprint(set(subjects)) != before_controls:
        changed += 1
    changed += sum(1 for t in subjects if rig.rows_left(t, tuple(untouched[t])) != before_rest[t])
    orphan_rows = orphans(rig)
    print(f"jobs started                      {len(jobs)}")
    print(f"jobs in a correct terminal state  {correct}")
    print(f"  succeeded without operator help {sum(s == 'succeeded' for s in first.values())}")
    print(f"  dead-lettered, then retried     {retried}")
    print(f"other subjects' data changed      {changed}   (control tenants: {controls})")
    print(f"orphan rows                       {orphan_rows}")
    print(
        f"faults injected                   {sum(faults.values())} {dict(sorted(faults.items()))}"
    )
    print(f"executions lost with a worker     {lost_executions}")
    print(f"transient retries                 {retries}")
    print(f"wall time                         {chaos_seconds:.0f} s")
    for line in wrong:
        print(f"  INCORRECT {line}")
    return 0 if correct == len(jobs) and changed == 0 and orphan_rows == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=4, help="jobs running at once")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between faults")
    parser.add_argument("--items", type=int, default=300, help="items per project (size)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1200.0)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
