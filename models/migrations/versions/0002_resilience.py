"""resilience: task leases, retries and crashes, attempt history, dead letters, deadlines

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("eraser_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("eraser_tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retries", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column("crashes", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("lease_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_eraser_tasks_status", ["status"], unique=False)

    op.create_table(
        "eraser_task_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("lease_id", sa.String(length=36), nullable=False),
        sa.Column("celery_id", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("tables", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["eraser_tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("eraser_task_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_eraser_task_attempts_task_id", ["task_id"], unique=False)
        batch_op.create_index("ix_eraser_task_attempts_lease_id", ["lease_id"], unique=False)

    op.create_table(
        "eraser_dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("celery_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replayed_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["eraser_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("eraser_dead_letters", schema=None) as batch_op:
        batch_op.create_index("ix_eraser_dead_letters_job_id", ["job_id"], unique=False)
        batch_op.create_index("ix_eraser_dead_letters_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("eraser_dead_letters")
    op.drop_table("eraser_task_attempts")
    with op.batch_alter_table("eraser_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_eraser_tasks_status")
        for column in ("retry_at", "queued_at", "lease_id", "crashes", "retries"):
            batch_op.drop_column(column)
    with op.batch_alter_table("eraser_jobs", schema=None) as batch_op:
        batch_op.drop_column("deadline_at")
