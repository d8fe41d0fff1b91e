"""rate-limit allowances and login failures in the database, so that replicas on one PostgreSQL count together

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("client", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", "client", name=op.f("pk_rate_buckets")),
    )
    op.create_index(op.f("ix_rate_buckets_at"), "rate_buckets", ["at"])
    op.create_table(
        "login_failures",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
        sa.Column("last", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("address", "username", name=op.f("pk_login_failures")),
    )
    op.create_index(op.f("ix_login_failures_last"), "login_failures", ["last"])


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_table("rate_buckets")
