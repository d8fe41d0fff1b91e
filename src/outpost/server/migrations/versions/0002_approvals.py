"""approval decisions on pending-approval steps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("decision", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("decided_by", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("decided_at", sa.Double(), nullable=True))
        batch.add_column(sa.Column("decision_sent_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("decision_sent_at")
        batch.drop_column("decided_at")
        batch.drop_column("decided_by")
        batch.drop_column("decision")
