"""Eraser benchmark: how long the ``eraser`` command line takes to start.

Run with ``python bench/cli_startup.py`` (``--runs N``, default 15). Needs nothing but
this checkout: it builds a small SQLite database (a tenant, its orders, their lines,
notes, a self-referencing category tree) in a temporary directory.

Each command runs ``--runs`` times as a fresh process (``sys.executable -m api.cli``,
what the ``eraser`` script runs); printed are the median wall and CPU seconds (user +
system of the child, from ``resource.getrusage``) and the spread:

* ``eraser --help``, ``eraser --version``, ``eraser worker --help`` (no broker, no
  registry, no database needed), and ``eraser --help`` on a pseudo-terminal, where
  Rich draws the help (in a pipe it is plain text);
* ``eraser plan`` on the SQLite database, next to the time the same process spends
  reflecting and planning (measured inside it), and what its imports cost
  (``python -X importtime``, the largest top-level packages);
* whether the engine path imported FastAPI, uvicorn, Flower or Celery (it must not).

CPU seconds are the figure to compare between machines and runs: on a busy machine
wall time includes waiting for a processor.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE categories (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    parent_id INTEGER REFERENCES categories(id));
CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    category_id INTEGER REFERENCES categories(id));
CREATE TABLE lines (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id));
CREATE TABLE notes (id INTEGER PRIMARY KEY,
    order_id INTEGER REFERENCES orders(id) ON DELETE SET NULL, body TEXT);
"""

#: Packages the one-database commands must never import.
SERVERS = ("fastapi", "uvicorn", "flower", "celery", "starlette")

#: Median CPU seconds each figure should stay under (issue 22).
TARGETS = {"eraser --help": 0.3, "eraser --version": 0.3, "eraser worker --help": 0.3}


def _terminal_run(argv: list[str]) -> None:
    """Run ``argv`` with stdout on a pseudo-terminal and read all it shows."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(  # noqa: S603 - our own command
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"},
        stdout=secondary,
        stderr=subprocess.DEVNULL,
    )
    os.close(secondary)
    try:
        while os.read(primary, 65536):
            pass
    except OSError:  # the terminal closed: the process ended
        pass
    finally:
        os.close(primary)
    proc.wait()


def _run(argv: list[str], terminal: bool = False) -> tuple[float, float]:
    """(wall, cpu) seconds of one fresh process."""
    command = [sys.executable, "-m", "api.cli", *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if terminal:
        _terminal_run(command)
    else:
        subprocess.run(  # noqa: S603 - our own command
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _figure(name: str, argv: list[str], runs: int, terminal: bool = False) -> None:
    _run(argv, terminal)  # warm the file cache
    samples = [_run(argv, terminal) for _ in range(runs)]
    walls = sorted(w for w, _ in samples)
    cpus = sorted(c for _, c in samples)
    cpu = statistics.median(cpus)
    target = TARGETS.get(name)
    verdict = (
        "" if target is None else f"   target < {target}s: {'ok' if cpu < target else 'MISSED'}"
    )
    print(
        f"  {name:<27} cpu {cpu:6.3f}s ({cpus[0]:.3f}-{cpus[-1]:.3f})"
        f"   wall {statistics.median(walls):6.3f}s ({walls[0]:.3f}-{walls[-1]:.3f}){verdict}"
    )


def _imports(argv: list[str]) -> tuple[dict[str, int], set[str]]:
    """Import time (microseconds, each module's own time) per package, and every
    module imported. ``api.cli`` (the command line itself) is told apart from the rest
    of ``api``."""
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-X", "importtime", "-m", "api.cli", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    own: dict[str, int] = {}
    modules: set[str] = set()
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if found is None:
            continue
        micros, module = int(found[1]), found[2]
        modules.add(module)
        package = "api.cli" if module.startswith("api.cli") else module.split(".")[0]
        own[package] = own.get(package, 0) + micros
    return own, modules


def _reflection_seconds(url: str) -> float:
    """Reflect and plan in a process that has already imported the engine."""
    code = (
        "import time; from worker.catalog.reflection import reflect;"
        "from worker.planning.building import build_plan;"
        "from worker.database import create_engine;"
        f"e = create_engine({url!r}, existing=True); t = time.perf_counter();"
        "build_plan(reflect(e), ['tenant_id']); print(time.perf_counter() - t)"
    )
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="processes per command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eraser-cli-bench-") as tmp:
        path = Path(tmp) / "shop.db"
        conn = sqlite3.connect(path)
        conn.executescript(SCHEMA)
        conn.close()
        url = f"sqlite:///{path}"
        plan = ["plan", "--db", url, "--subject-column", "tenant_id"]
        print(f"eraser start-up, {args.runs} fresh processes each (median, min-max):")
        _figure("eraser --help", ["--help"], args.runs)
        _figure("eraser --help (terminal)", ["--help"], args.runs, terminal=True)
        _figure("eraser --version", ["--version"], args.runs)
        _figure("eraser worker --help", ["worker", "--help"], args.runs)
        _figure("eraser plan (SQLite)", plan, args.runs)
        reflecting = statistics.median(_reflection_seconds(url) for _ in range(5))
        print(f"  of which reflect + plan       {reflecting:.3f}s (inside a warm process)")
        own, modules = _imports(plan)
        largest = sorted(own.items(), key=lambda kv: -kv[1])[:8]
        print(
            f"  eraser plan's imports         {sum(own.values()) / 1e6:.3f}s in all; the largest: "
            + ", ".join(f"{name} {micros / 1e6:.3f}s" for name, micros in largest)
        )
        servers = sorted({m.split(".")[0] for m in modules} & set(SERVERS))
        print(f"  engine path imports {', '.join(SERVERS)}: {', '.join(servers) or 'none'}")


if __name__ == "__main__":
    main()
