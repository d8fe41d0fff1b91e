"""roles of users and API tokens (existing ones become admins of their account), scoped and expiring tokens,
approval rules of a pipeline, who started a build, and the append-only audit log

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        # server_default: every token that exists keeps doing what it did (admin of its account).
        batch_op.add_column(sa.Column("role", sa.String(length=20), nullable=False, server_default="admin"))
        batch_op.add_column(sa.Column("pipeline_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=100), nullable=True))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=20), nullable=False, server_default="admin"))
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("approval_role", sa.String(length=20), nullable=False, server_default="developer")
        )
        batch_op.add_column(
            sa.Column("approval_requires_other", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("initiator_id", sa.String(length=100), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_account_at", ["account_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_account_at")
    op.drop_table("audit_log")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_column("initiator_id")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("approval_requires_other")
        batch_op.drop_column("approval_role")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("role")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("created_by")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("pipeline_id")
        batch_op.drop_column("role")
