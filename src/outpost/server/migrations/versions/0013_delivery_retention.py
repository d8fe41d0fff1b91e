"""webhook deliveries are kept OUTPOST_DELIVERY_DAYS: an index to find the oldest

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_received", "deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_received", table_name="deliveries")
