"""integrations, git queries, and YAML from the repository on pipelines and builds

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=True),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("runner_secret", sa.String(length=255), nullable=True),
        sa.Column("behind_firewall", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("insecure", sa.Boolean(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_integrations_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        sa.UniqueConstraint("account_id", "kind", "name", name=op.f("uq_integrations_account_id")),
    )
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_integrations_account_id"), ["account_id"], unique=False)

    op.create_table(
        "git_queries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("runtime_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("runner_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.Column("answered_at", sa.Double(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_git_queries_account_id_accounts")),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], name=op.f("fk_git_queries_runtime_id_runtimes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_git_queries")),
    )
    with op.batch_alter_table("git_queries", schema=None) as batch_op:
        batch_op.create_index("ix_git_queries_runtime_status", ["runtime_id", "status", "created_at"], unique=False)

    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("repo", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("git", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("revision", sa.String(length=255), nullable=True))

    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("yaml_repo", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("yaml_git", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("yaml_ref", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("yaml_revision", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_column("yaml_revision")
        batch_op.drop_column("yaml_ref")
        batch_op.drop_column("yaml_git")
        batch_op.drop_column("yaml_repo")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("revision")
        batch_op.drop_column("git")
        batch_op.drop_column("repo")
    with op.batch_alter_table("git_queries", schema=None) as batch_op:
        batch_op.drop_index("ix_git_queries_runtime_status")
    op.drop_table("git_queries")
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_integrations_account_id"))
    op.drop_table("integrations")
