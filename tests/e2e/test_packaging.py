"""What installing Eraser gives a service: the client distribution (``deploy/client``)
installs the module ``eraser_client`` and nothing else, so an upstream service gains no
``api``/``models``/``tasks``/``worker``; the main distribution still installs the server
packages, and its editable install prints no setuptools warning.

Builds wheels and installs them into a new virtualenv (dependencies from the package
index): ``fresh_install``, run once by CI, not by every ``make test``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.fresh_install, pytest.mark.timeout(900)]

SERVER_PACKAGES = ("api", "models", "tasks", "worker", "examples", "celeryconfig")

#: Run inside the new virtualenv: which server modules import, then the client against
#: the test API whose URL is the first argument.
_SCRIPT = """
import importlib, json, sys
found = []
for name in sys.argv[2].split(","):
    try:
        importlib.import_module(name)
        found.append(name)
    except ModuleNotFoundError:
        pass
from eraser_client import EraserApiError, EraserClient
with EraserClient(sys.argv[1], api_key="ek_test_secret") as eraser:
    job = eraser.submit("tenant", "t-42", services=["orders"], idempotency_key="k-1")
    done = eraser.wait(job["id"], timeout=30, poll=0.05)
    try:
        eraser.get("missing")
        error = None
    except EraserApiError as exc:
        error = [exc.status, str(exc)]
print(json.dumps({"found": found, "job": job, "done": done, "error": error}))
"""


class _Api(BaseHTTPRequestHandler):
    """A test API: one job, running on its first read and succeeded after; a 404
    problem document for any other job."""

    seen: list[dict[str, Any]]
    reads: int

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "idempotency_key": self.headers.get("Idempotency-Key"),
                "body": json.loads(self.rfile.read(length)) if length else None,
            }
        )

    def do_POST(self) -> None:
        self._record()
        self._answer(201, {"id": "job-1", "status": "pending"})

    def do_GET(self) -> None:
        self._record()
        if self.path != "/v1/jobs/job-1":
            self._answer(404, {"title": "Not Found", "detail": "no such job", "status": 404})
            return
        type(self).reads += 1
        self._answer(200, {"id": "job-1", "status": "running" if self.reads < 2 else "succeeded"})

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def test_api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    handler = type("Api", (_Api,), {"seen": [], "reads": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command as in a new terminal: no PYTHONPATH, no active virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _wheel(project: Path, out: Path) -> Path:
    """A wheel of ``project``, built from a copy (the source tree stays clean)."""
    source = out / f"src-{project.name}"
    shutil.copytree(
        project,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", source, "-w", out, cwd=out)
    (wheel,) = out.glob("*.whl")
    return wheel


def _top_level(wheel: Path) -> set[str]:
    names = zipfile.ZipFile(wheel).namelist()
    return {n.split("/")[0] for n in names if ".dist-info/" not in n}


def _venv(path: Path) -> Path:
    """A new virtualenv with a current pip (the one ``make install`` uses: older ones
    do not show a build backend's warnings)."""
    _run(sys.executable, "-m", "venv", path, cwd=path.parent)
    python = path / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip", cwd=path.parent)
    return python


def test_the_client_wheel_installs_eraser_client_alone(
    tmp_path: Path, test_api: tuple[str, list[dict[str, Any]]]
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _wheel(ROOT / "deploy" / "client", wheels)
    assert _top_level(wheel) == {"eraser_client"}

    python = _venv(tmp_path / "venv")
    _run(python, "-m", "pip", "install", "--quiet", "--find-links", wheels, wheel, cwd=tmp_path)
    outside = tmp_path / "elsewhere"  # not the repository: nothing importable by accident
    outside.mkdir()
    url, seen = test_api
    output = _run(python, "-c", _SCRIPT, url, ",".join(SERVER_PACKAGES), cwd=outside).stdout
    result = json.loads(output)

    assert result["found"] == []  # no api, models, tasks, worker, examples, celeryconfig
    assert result["job"] == {"id": "job-1", "status": "pending"}
    assert result["done"]["status"] == "succeeded"
    assert result["error"] == [404, "HTTP 404: no such job"]
    submitted = seen[0]
    assert (submitted["method"], submitted["path"]) == ("POST", "/v1/jobs")
    assert submitted["authorization"] == "Bearer ek_test_secret"
    assert submitted["idempotency_key"] == "k-1"
    assert submitted["body"] == {
        "subject_kind": "tenant",
        "subject_value": "t-42",
        "services": ["orders"],
        "dry_run": False,
    }
    installed = _run(python, "-m", "pip", "list", "--format=json", cwd=outside).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "eraser" not in names
    assert not names & {"celery", "sqlalchemy", "fastapi", "pydantic"}


def test_the_main_distribution_keeps_its_packages_and_installs_without_warning(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _wheel(ROOT, wheels)
    assert _top_level(wheel) == {"api", "models", "tasks", "worker", "examples", "celeryconfig.py"}

    python = _venv(tmp_path / "venv")
    source = wheels / f"src-{ROOT.name}"
    done = _run(python, "-m", "pip", "install", "--no-deps", "--editable", source, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert "Editable installation" not in output  # setuptools' warning of a flat layout
    assert "take precedence during imports" not in output
    where = "import importlib.util as u; print(u.find_spec('api').origin)"
    located = _run(python, "-c", where, cwd=tmp_path).stdout
    assert Path(located.strip()).is_relative_to(source)
