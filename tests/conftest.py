"""Shared fixtures: real PostgreSQL, MariaDB and SQLite target databases.

Every engine test gets a database of its own (created here, dropped afterwards), so
tests may run any DDL. With ``ERASER_REQUIRE_SERVICES=1`` (CI) a missing server
fails the test instead of skipping it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import redis_dbs
from worker.database import create_engine

PG_ADMIN_URL = os.environ.get("ERASER_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("ERASER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REQUIRE = os.environ.get("ERASER_REQUIRE_SERVICES") == "1"
BACKENDS = ("sqlite", "postgresql", "mysql")
#: ``postgresql-plain``: PostgreSQL through a role that is not a superuser, so the
#: database's own foreign-key triggers check every batch (``fk_checks`` ``auto`` falls
#: back to ``database``); ``postgresql`` connects as a superuser and gets ``eraser``.
ENGINE_BACKENDS = (*BACKENDS, "postgresql-plain")

_counter = itertools.count()
_reachable: dict[str, bool] = {}


def _server_up(url: str) -> bool:
    if url not in _reachable:
        engine = create_engine(url, pool_pre_ping=False)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[url] = True
        except sa.exc.DBAPIError:
            _reachable[url] = False
        finally:
            engine.dispose()
    return _reachable[url]


def need_server(name: str, url: str) -> None:
    """Skip (or, when services are required, fail) if the server does not answer."""
    if _server_up(url):
        return
    if REQUIRE:
        pytest.fail(f"{name} is not reachable and ERASER_REQUIRE_SERVICES=1")
    pytest.skip(f"{name} is not reachable")


@dataclass
class TargetDB:
    """One throw-away target database."""

    backend: str
    url: str
    engine: sa.Engine
    #: Name of a second schema/database for cross-schema tests (None on SQLite).
    other_schema: str | None

    @property
    def default_schema(self) -> str:
        return {"sqlite": "main", "postgresql": "public"}.get(self.backend) or str(
            self.engine.url.database
        )

    def run(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for stmt in statements:
                conn.exec_driver_sql(stmt)

    def create(self, metadata: sa.MetaData) -> None:
        metadata.create_all(self.engine)

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(table), rows)

    def snapshot(self, *tables: sa.Table) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, sorted: compared byte for byte before and after."""
        result = {}
        with self.engine.connect() as conn:
            for table in tables:
                rows = conn.execute(sa.select(table)).all()
                result[table.fullname] = sorted((tuple(r) for r in rows), key=repr)
        return result


def _make_pg(plain: bool = False) -> Iterator[TargetDB]:
    need_server("PostgreSQL", PG_ADMIN_URL)
    name = f"eraser_t{os.getpid()}_{next(_counter)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        if plain:
            # A role of its own, owning the database (trust authentication: no password).
            conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER')
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" OWNER TO "{name}"')
    url = sa.make_url(PG_ADMIN_URL).set(database=name)
    if plain:
        url = url.set(username=name)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "other side"')
    try:
        yield TargetDB(
            "postgresql", url.render_as_string(hide_password=False), engine, "other side"
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if plain:
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()


def _make_mysql() -> Iterator[TargetDB]:
    need_server("MariaDB", MYSQL_ADMIN_URL)
    name = f"eraser_t{os.getpid()}_{next(_counter)}"
    other = f"{name}_other"
    admin = create_engine(MYSQL_ADMIN_URL)
    with admin.begin() as conn:
        for db in (name, other):
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{db}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    url = sa.make_url(MYSQL_ADMIN_URL).set(database=name)
    engine = create_engine(url)
    try:
        yield TargetDB("mysql", url.render_as_string(hide_password=False), engine, other)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            for db in (other, name):  # the other side may reference the main one
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{db}`")
        admin.dispose()


def _make_sqlite(tmp_path: Path) -> Iterator[TargetDB]:
    url = f"sqlite:///{tmp_path / 'target.db'}"
    engine = create_engine(url)
    try:
        yield TargetDB("sqlite", url, engine, None)
    finally:
        engine.dispose()


@pytest.fixture(params=ENGINE_BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDB]:
    """A fresh target database on each backend in turn."""
    yield from make_db(request.param, tmp_path)


def make_db(backend: str, tmp_path: Path) -> Iterator[TargetDB]:
    if backend == "postgresql":
        yield from _make_pg()
    elif backend == "postgresql-plain":
        yield from _make_pg(plain=True)
    elif backend == "mysql":
        yield from _make_mysql()
    else:
        yield from _make_sqlite(tmp_path)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[TargetDB]:
    yield from _make_pg()


@pytest.fixture
def pg_twin(tmp_path: Path) -> Iterator[TargetDB]:
    """A second fresh PostgreSQL database (superuser), next to ``pg``."""
    yield from _make_pg()


@pytest.fixture
def pg_plain(tmp_path: Path) -> Iterator[TargetDB]:
    """A fresh PostgreSQL database reached through a role that is not a superuser."""
    yield from _make_pg(plain=True)


@pytest.fixture
def mysql(tmp_path: Path) -> Iterator[TargetDB]:
    yield from _make_mysql()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[TargetDB]:
    yield from _make_sqlite(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _redis_claims() -> Iterator[None]:
    """Gives back the Redis databases the session claimed (``tests/redis_dbs.py``) and
    fails it if another run took one of them while it ran."""
    yield
    redis_dbs.finish()
