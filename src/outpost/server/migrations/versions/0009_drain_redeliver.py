"""a drained runner (takes no new builds), and what a webhook delivery brought (its body and the headers a
provider's parser reads, so it can be delivered again) with the delivery a redelivery repeated

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns only: added with ALTER TABLE, SQLite copies no table.
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drained_at", sa.Double(), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("headers", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("redelivery_of", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("redelivery_of")
        batch_op.drop_column("headers")
        batch_op.drop_column("payload")
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.drop_column("drained_at")
