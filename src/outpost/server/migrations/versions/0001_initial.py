"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_used_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_api_tokens_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_account_id"), ["account_id"], unique=False)

    op.create_table(
        "runtimes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_runtimes_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runtimes")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_runtimes_account_id")),
    )
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runtimes_account_id"), ["account_id"], unique=False)

    op.create_table(
        "install_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("runtime_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.Column("runner_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_install_tokens_account_id_accounts")),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], name=op.f("fk_install_tokens_runtime_id_runtimes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_install_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_install_tokens_token_hash")),
    )
    with op.batch_alter_table("install_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_install_tokens_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_install_tokens_runtime_id"), ["runtime_id"], unique=False)

    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("runtime_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=150), nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("yaml_file", sa.String(length=255), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_pipelines_account_id_accounts")),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], name=op.f("fk_pipelines_runtime_id_runtimes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_pipelines_account_id")),
    )
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pipelines_account_id"), ["account_id"], unique=False)

    op.create_table(
        "runners",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("runtime_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("executor", sa.String(length=50), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_seen_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_runners_account_id_accounts")),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], name=op.f("fk_runners_runtime_id_runtimes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runners")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_runners_token_hash")),
    )
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runners_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runners_runtime_id"), ["runtime_id"], unique=False)

    op.create_table(
        "builds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("pipeline_id", sa.String(length=32), nullable=False),
        sa.Column("pipeline_name", sa.String(length=150), nullable=False),
        sa.Column("runtime_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("yaml_file", sa.String(length=255), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("initiator", sa.String(length=100), nullable=False),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("sha", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("runner_id", sa.String(length=32), nullable=True),
        sa.Column("lease_id", sa.String(length=32), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("requeues", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_builds_account_id_accounts")),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], name=op.f("fk_builds_pipeline_id_pipelines")),
        sa.ForeignKeyConstraint(["runtime_id"], ["runtimes.id"], name=op.f("fk_builds_runtime_id_runtimes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builds")),
    )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index("ix_builds_account_created", ["account_id", "created_at"], unique=False)
        batch_op.create_index("ix_builds_dispatch", ["runtime_id", "status", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_builds_pipeline_id"), ["pipeline_id"], unique=False)

    op.create_table(
        "leases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("runner_id", sa.String(length=32), nullable=False),
        sa.Column("job_token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("end_reason", sa.String(length=50), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_leases_account_id_accounts")),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], name=op.f("fk_leases_build_id_builds")),
        sa.ForeignKeyConstraint(["runner_id"], ["runners.id"], name=op.f("fk_leases_runner_id_runners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leases")),
        sa.UniqueConstraint("job_token_hash", name=op.f("uq_leases_job_token_hash")),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leases_build_id"), ["build_id"], unique=False)
        batch_op.create_index("ix_leases_live", ["ended_at", "expires_at"], unique=False)

    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=150), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("stage", sa.String(length=150), nullable=True),
        sa.Column("type", sa.String(length=150), nullable=False),
        sa.Column("parent", sa.String(length=150), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("log_size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], name=op.f("fk_steps_build_id_builds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint("build_id", "name", name=op.f("uq_steps_build_id")),
    )
    op.create_table(
        "log_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], name=op.f("fk_log_chunks_build_id_builds")),
        sa.ForeignKeyConstraint(["step_id"], ["steps.id"], name=op.f("fk_log_chunks_step_id_steps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_chunks")),
    )
    with op.batch_alter_table("log_chunks", schema=None) as batch_op:
        batch_op.create_index("ix_log_chunks_build_cursor", ["build_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_log_chunks_step_id"), ["step_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("log_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_chunks_step_id"))
        batch_op.drop_index("ix_log_chunks_build_cursor")

    op.drop_table("log_chunks")
    op.drop_table("steps")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index("ix_leases_live")
        batch_op.drop_index(batch_op.f("ix_leases_build_id"))

    op.drop_table("leases")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_builds_pipeline_id"))
        batch_op.drop_index("ix_builds_dispatch")
        batch_op.drop_index("ix_builds_account_created")

    op.drop_table("builds")
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runners_runtime_id"))
        batch_op.drop_index(batch_op.f("ix_runners_account_id"))

    op.drop_table("runners")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipelines_account_id"))

    op.drop_table("pipelines")
    with op.batch_alter_table("install_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_install_tokens_runtime_id"))
        batch_op.drop_index(batch_op.f("ix_install_tokens_account_id"))

    op.drop_table("install_tokens")
    with op.batch_alter_table("runtimes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runtimes_account_id"))

    op.drop_table("runtimes")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_account_id"))

    op.drop_table("api_tokens")
    op.drop_table("accounts")
