"""A service of the tests' own for the ``http`` kind: a FastAPI app that mounts
``eraser_client.erasure_router`` over its own SQLite database, run by uvicorn as a real
process (``HttpService`` below).

Its environment: ``SERVICE_DATABASE_URL``, ``SERVICE_SECRET`` and ``SERVICE_FAULTS``, a
file of words the next requests consume, one each, to misbehave on purpose: a status
code (``503``, ``400``) answers ``POST /erasures`` with it; ``slow`` makes the next
erasure take two seconds.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from eraser_client import ErasureRequest, ErasureResult, engine_erasure, erasure_router
from fastapi import FastAPI, Request, Response

ROOT = Path(__file__).resolve().parents[2]

metadata = sa.MetaData()
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("tenant_key", sa.String(40), nullable=False, index=True),
    sa.Column("name", sa.String(40)),
)
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey(accounts.c.id), nullable=False),
    sa.Column("body", sa.String(80)),
)


def seed(url: str, tenants: dict[str, int]) -> None:
    """Create the service's tables and give each tenant its number of accounts, each
    with two notes."""
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    ids = iter(range(1, 10_000_000))
    with engine.begin() as conn:
        for tenant, count in tenants.items():
            for _ in range(count):
                account = next(ids)
                conn.execute(accounts.insert().values(id=account, tenant_key=tenant, name="n"))
                for _ in range(2):
                    conn.execute(notes.insert().values(id=next(ids), account_id=account, body="b"))
    engine.dispose()


def rows_of(url: str, tenant: str) -> list[tuple[object, ...]]:
    """Every row of ``tenant`` in the service's database, in a stable order."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        mine = sa.select(accounts.c.id).where(accounts.c.tenant_key == tenant)
        found = [
            ("accounts", *r)
            for r in conn.execute(
                sa.select(accounts).where(accounts.c.tenant_key == tenant).order_by(accounts.c.id)
            )
        ]
        found += [
            ("notes", *r)
            for r in conn.execute(
                sa.select(notes).where(notes.c.account_id.in_(mine)).order_by(notes.c.id)
            )
        ]
    engine.dispose()
    return found


class Faults:
    """The words of the faults file, taken one at a time."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.lock = threading.Lock()

    def take(self, wanted: Callable[[str], bool]) -> str | None:
        if self.path is None or not self.path.exists():
            return None
        with self.lock:
            words = self.path.read_text(encoding="utf-8").split()
            if not words or not wanted(words[0]):
                return None
            self.path.write_text(" ".join(words[1:]), encoding="utf-8")
            return words[0]


def create_app() -> FastAPI:
    faults = Faults(os.environ.get("SERVICE_FAULTS", ""))
    engine_erase = engine_erasure(os.environ["SERVICE_DATABASE_URL"], {"tenant": "tenant_key"})

    def erase(request: ErasureRequest) -> ErasureResult:
        if faults.take(lambda word: word == "slow"):
            time.sleep(2)
        return engine_erase(request)

    app = FastAPI()

    @app.middleware("http")
    async def misbehave(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method == "POST":
            word = faults.take(str.isdigit)
            if word is not None:
                return Response(status_code=int(word))
        return await call_next(request)

    app.include_router(erasure_router(secret=os.environ["SERVICE_SECRET"], erase=erase))
    return app


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class HttpService:
    """The app above in a uvicorn process of its own, on ``port``."""

    port: int
    workdir: Path
    secret: str = field(default_factory=new_secret)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.workdir / 'service.db'}"

    @property
    def faults(self) -> Path:
        return self.workdir / "faults"

    @property
    def log(self) -> Path:
        return self.workdir / "service.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "SERVICE_DATABASE_URL": self.database_url,
            "SERVICE_SECRET": self.secret,
            "SERVICE_FAULTS": str(self.faults),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "deploy" / "client" / "src")]),
        }
        argv = [sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:create_app"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the service exited:\n" + self.log.read_text()[-2000:])
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the service did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def inject(self, *words: str) -> None:
        self.faults.write_text(" ".join(words), encoding="utf-8")
