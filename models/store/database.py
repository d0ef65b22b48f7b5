"""The job store's connection: the source of truth for every erasure (PostgreSQL;
SQLite when embedded). ``JobStore.transaction()`` is the one place that commits or
rolls back; every named operation in ``models.store`` takes the session it yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import orm

from models.settings import get_settings
from models.store.sealing import SubjectSeal, subject_seal


class JobStore:
    """Sessions on the job store. ``transaction()`` is the one place that commits.
    ``seal`` seals and opens the subject's value (by default: the process's settings,
    read at first use, so a store that never touches a value needs no key)."""

    def __init__(self, engine: sa.Engine, seal: SubjectSeal | None = None) -> None:
        self.engine = engine
        self._seal = seal
        bind = engine
        if engine.dialect.name == "sqlite":
            # The embedded store is written by several worker threads: transactions
            # take the write lock when they begin, and readers never block the writer.
            bind = engine.execution_options(sqlite_begin="IMMEDIATE")
            raw = engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA journal_mode=WAL")
            finally:
                raw.close()
        self._sessions = orm.sessionmaker(bind, expire_on_commit=False)

    @property
    def seal(self) -> SubjectSeal:
        if self._seal is None:
            self._seal = subject_seal(get_settings())
        return self._seal

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[orm.Session]:
        """A session whose work commits at the end of the block, or rolls back.

        ``durable=False`` (PostgreSQL) commits without waiting for the WAL flush: for
        progress that a crash may lose without harm (a redelivered task redoes it).
        """
        with self._sessions() as session, session.begin():
            if not durable and self.engine.dialect.name == "postgresql":
                session.execute(sa.text("SET LOCAL synchronous_commit = off"))
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
