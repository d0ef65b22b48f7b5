"""The HTTP app over a SQLite job store, in process (no server, no broker), for the
route tests: ``SqliteApi.call`` sends one request through ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from api.http import create_app
from api.keys import Scope, create_key
from models import migrate
from models.messages import ErasureRequest
from models.registry import Registry, load_registry
from models.settings import Settings
from models.store.database import JobStore
from models.store.tables import Job
from tasks.submit import submit
from worker.database import create_engine

REGISTRY = """
[subjects.tenant]
column = "tenant_id"

[subjects.user]
column = "user_id"

[services.shop]
url_env = "SHOP_URL"

[services.crm]
url_env = "CRM_URL"
"""

#: Key name -> scopes.
KEYS = {
    "reader": [Scope.READ],
    "submitter": [Scope.SUBMIT],
    "all": [Scope.READ, Scope.SUBMIT, Scope.ADMIN],
}


@dataclass
class SqliteApi:
    app: FastAPI
    store: JobStore
    registry: Registry
    settings: Settings
    secrets: dict[str, str]

    def call(
        self, method: str, path: str, key: str | None = "all", **request: Any
    ) -> httpx.Response:
        headers = dict(request.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.secrets[key]}"

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://eraser") as http:
                return await http.request(method, path, headers=headers, **request)

        return asyncio.run(send())

    def submit(self, value: str = "1", kind: str = "tenant") -> Job:
        """A job committed but not dispatched (nothing runs it)."""
        job, _ = submit(
            self.store, self.registry, ErasureRequest(subject_kind=kind, subject_value=value)
        )
        return job


def sqlite_api(tmp_path: Path) -> Iterator[SqliteApi]:
    """A fixture body: the app, its store, registry and one secret per key of ``KEYS``."""
    (tmp_path / "services.toml").write_text(REGISTRY, encoding="utf-8")
    registry = load_registry(tmp_path / "services.toml")
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    store = JobStore(engine)
    made = {name: create_key(name, scopes) for name, scopes in KEYS.items()}
    settings = Settings(api_keys=[key.entry for key in made.values()])
    app = create_app(settings, store, registry, metrics_cache_seconds=0)
    yield SqliteApi(app, store, registry, settings, {n: k.secret for n, k in made.items()})
    engine.dispose()
