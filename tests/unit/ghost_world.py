"""A small world for submitting and finalizing, no broker: a registry of a shop and of
``ghost`` (a service whose URL is never set) and a SQLite shop of two tenants. The job
store is ``job_world``'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.registry import Registry, load_registry
from worker.database import create_engine

REGISTRY = """
[subjects.tenant]
column = "tenant_id"

[services.shop]
url_env = "SHOP_URL"

[services.ghost]
url_env = "GHOST_URL_NOT_SET"
"""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    path = tmp_path / "services.toml"
    path.write_text(REGISTRY, encoding="utf-8")
    return load_registry(path)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[sa.Engine]:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id));
        """
    )
    conn.executemany("INSERT INTO customers VALUES (?, ?)", [(i, 1 + i % 2) for i in range(20)])
    conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i % 20) for i in range(60)])
    conn.commit()
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()
