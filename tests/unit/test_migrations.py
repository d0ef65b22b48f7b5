"""The job store's schema: Alembic migrations are idempotent and match the tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models import migrate
from models.store.database import JobStore
from models.store.tables import Base


def test_migrations_are_idempotent_and_match_the_models(store: JobStore) -> None:
    migrate.upgrade(store.engine)  # a second run changes nothing
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
