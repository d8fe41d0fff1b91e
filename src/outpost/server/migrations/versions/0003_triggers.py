"""triggers (git webhooks and cron), their deliveries, and the trigger of a build

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("pipeline_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=150), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("provider", sa.String(length=30), nullable=True),
        sa.Column("repo", sa.String(length=255), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("branch_regex", sa.Text(), nullable=True),
        sa.Column("pr_target_regex", sa.Text(), nullable=True),
        sa.Column("comment_regex", sa.Text(), nullable=True),
        sa.Column("modified_files_glob", sa.Text(), nullable=True),
        sa.Column("allow_fork_events", sa.Boolean(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("termination_policy", sa.String(length=50), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("cron", sa.String(length=100), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("last_fired_at", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_triggers_account_id_accounts")),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], name=op.f("fk_triggers_pipeline_id_pipelines")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
    )
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_triggers_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_triggers_pipeline_id"), ["pipeline_id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("trigger_id", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("event", sa.String(length=100), nullable=True),
        sa.Column("delivery_id", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("rule", sa.String(length=30), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("build_id", sa.String(length=32), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_deliveries_account_id_accounts")),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], name=op.f("fk_deliveries_trigger_id_triggers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("trigger_id", "delivery_id", name=op.f("uq_deliveries_trigger_id")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_trigger_received", ["trigger_id", "received_at"], unique=False)

    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("event", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_builds_trigger_id"), ["trigger_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_builds_trigger_id"))
        batch_op.drop_column("event")
        batch_op.drop_column("trigger_id")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_trigger_received")
    op.drop_table("deliveries")
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_triggers_pipeline_id"))
        batch_op.drop_index(batch_op.f("ix_triggers_account_id"))
    op.drop_table("triggers")
