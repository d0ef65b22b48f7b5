"""exact counts: each attempt's ledger watermark, and whether a task's counts are
exact (with an upper bound when they are not)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("eraser_tasks") as batch_op:
        batch_op.add_column(
            sa.Column("counts_exact", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("rows_at_most", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("eraser_task_attempts") as batch_op:
        batch_op.add_column(sa.Column("ledger_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("eraser_task_attempts") as batch_op:
        batch_op.drop_column("ledger_seq")
    with op.batch_alter_table("eraser_tasks") as batch_op:
        batch_op.drop_column("rows_at_most")
        batch_op.drop_column("counts_exact")
