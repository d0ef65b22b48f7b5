"""The README's promise: on a fresh clone, in an environment without any ``ERASER_*``
variable, its two commands work — ``make demo`` (a succeeded, verified erasure through
the chord, no server) and ``make test`` (the suite).

``make test`` here runs the unit tests only (``PYTEST_ARGS``): the whole suite from a
fresh clone is what CI's own run is (``.ci/run`` clones, installs and calls ``make
test``), and running it again nested doubled CI's time. What this adds is a fresh
terminal: no virtualenv, no ``ERASER_*`` variable, the make target as written.

The clone test installs everything from the package index, so it is marked
``fresh_install``: left out of ``make test`` (the ``addopts`` of pyproject.toml) and run
once by CI (``make test PYTEST_ARGS="-m fresh_install"``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What the inner ``make test`` runs: the server-free unit tests.
UNIT_ONLY = "tests/unit -p no:cacheprovider"


def readme_commands() -> list[str]:
    """The commands of the README's Quick start block, as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Quick start")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_quick_start_is_make_demo_then_make_test() -> None:
    assert readme_commands() == ["make demo", "make test"]


@pytest.mark.fresh_install
@pytest.mark.timeout(2400)
def test_a_fresh_clone_runs_the_readme_commands(tmp_path: Path) -> None:
    git = shutil.which("git")
    make = shutil.which("make")
    if not (ROOT / ".git").exists() or git is None or make is None:
        pytest.skip("not a git checkout, or no git/make")
    clone = tmp_path / "eraser"
    subprocess.run([git, "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERASER_")}
    # A fresh terminal: no virtualenv, and no outer make (whose MAKELEVEL would make the
    # inner one print "Entering/Leaving directory" lines).
    for variable in ("VIRTUAL_ENV", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
        env.pop(variable, None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    results = {}
    for command in readme_commands():
        program, *rest = command.split()
        assert program == "make"
        if rest == ["test"]:
            rest.append(f"PYTEST_ARGS={UNIT_ONLY}")
        done = subprocess.run(
            [make, *rest],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=2000,
            check=False,
        )
        results[command] = done
        assert done.returncode == 0, f"{command}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    demo = results["make demo"].stdout
    assert demo.count("job succeeded") == 2
    assert "no row of tenant 2 remains: True" in demo
    assert "Done: tenant erased, nothing else touched." in demo
    demo_lines = demo.split("Eraser demo:", 1)[1].splitlines()
    wide = [line for line in demo_lines if len(line) > 80]
    assert wide == [], "lines wider than an 80-column terminal"
    assert re.search(r"\d+ passed", results["make test"].stdout)
    assert " failed" not in results["make test"].stdout.splitlines()[-1]
