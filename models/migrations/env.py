"""Alembic environment: migrates the job store whose engine the caller passes in."""

from __future__ import annotations

from alembic import context

from models.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
