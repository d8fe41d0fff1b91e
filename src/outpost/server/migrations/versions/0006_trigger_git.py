"""a git trigger's own git integration (for computing changed files on a runner), and pending deliveries

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("git", sa.String(length=100), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_until", sa.Double(), nullable=True))
        batch_op.create_index("ix_deliveries_pending_until", ["pending_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_pending_until")
        batch_op.drop_column("pending_until")
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.drop_column("git")
