"""subject privacy: the value sealed at rest and purged, keyed hashes, idempotency
keys scoped per API key, ``nothing_matched``

Revision ID: 0003
Revises: 0002

The data step runs inside the migration: the job-store encryption key and the
pepper are read from the settings (derived, when embedded, as every Eraser process
derives them), so one ``eraser db upgrade`` leaves no plain value behind. Every value
stored before this revision is plain: those of succeeded or cancelled jobs are purged,
the others sealed; each job gets its subject's keyed hash, and its request digest is
keyed (so an idempotency key used before the upgrade still matches its request). A
deployment without the secrets set is refused, naming them, when there is anything
to convert; an empty store needs none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.keyring import missing_secrets
from models.settings import get_settings
from models.store.sealing import keyed, subject_hash, subject_seal

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JOBS = sa.table(
    "eraser_jobs",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    sa.column("subject_kind", sa.String),
    sa.column("subject_value", sa.Text),
    sa.column("subject_hash", sa.String),
    sa.column("request_hash", sa.String),
    sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("purged_at", sa.DateTime(timezone=True)),
)
_PURGED_AT_ONCE = ("succeeded", "cancelled")


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table(
        "eraser_jobs",
        # SQLite: the unique constraint of 0001 has no name; this gives it one to drop.
        naming_convention={"uq": "%(table_name)s_%(column_0_name)s_key"},
    ) as batch_op:
        batch_op.alter_column("subject_value", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(sa.Column("subject_hash", sa.String(length=80), nullable=True))
        batch_op.add_column(
            sa.Column("owner", sa.String(length=64), nullable=False, server_default=sa.text("''"))
        )
        batch_op.add_column(
            sa.Column("nothing_matched", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        # PostgreSQL's name for it; SQLite's through the naming convention above.
        batch_op.drop_constraint("eraser_jobs_idempotency_key_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_eraser_jobs_owner_idempotency_key", ["owner", "idempotency_key"]
        )
    with op.batch_alter_table("eraser_tasks") as batch_op:
        batch_op.add_column(
            sa.Column("nothing_matched", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    _seal_existing(bind)


def _seal_existing(bind: sa.Connection) -> None:
    rows = bind.execute(
        sa.select(
            _JOBS.c.id,
            _JOBS.c.status,
            _JOBS.c.subject_kind,
            _JOBS.c.subject_value,
            _JOBS.c.request_hash,
            _JOBS.c.finished_at,
        ).where(_JOBS.c.subject_hash.is_(None))
    ).all()
    if not rows:
        return
    settings = get_settings()
    missing = missing_secrets(settings)
    if missing and not settings.embedded:
        raise RuntimeError(
            f"migration 0003 seals the stored subject values: set {', '.join(missing)} "
            "(the values the deployment runs with) and run the upgrade again"
        )
    seal = subject_seal(settings)
    for row in rows:
        plain = row.subject_value
        purge = row.status in _PURGED_AT_ONCE
        bind.execute(
            sa.update(_JOBS)
            .where(_JOBS.c.id == row.id)
            .values(
                subject_value=None if purge or plain is None else seal.seal(plain),
                subject_hash=subject_hash(seal.pepper, row.subject_kind, plain or ""),
                request_hash=keyed(seal.pepper, row.request_hash),
                purged_at=row.finished_at if purge else None,
            )
        )


def downgrade() -> None:
    # The values purged or sealed by the upgrade stay so: a downgrade never brings
    # a subject back in plain text (the older code cannot run a sealed job).
    with op.batch_alter_table("eraser_tasks") as batch_op:
        batch_op.drop_column("nothing_matched")
    with op.batch_alter_table("eraser_jobs") as batch_op:
        batch_op.drop_constraint("uq_eraser_jobs_owner_idempotency_key", type_="unique")
        batch_op.create_unique_constraint("eraser_jobs_idempotency_key_key", ["idempotency_key"])
        for column in ("purged_at", "nothing_matched", "owner", "subject_hash"):
            batch_op.drop_column(column)
