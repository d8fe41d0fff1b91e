"""build artifacts (files steps mark, kept N days) and annotations (the test cases of steps' JUnit reports), and
the steps a restart from the failed step may skip

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New tables, and a nullable column added with ALTER TABLE (no copy of builds on SQLite; see 0008).
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=150), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_artifacts_account_id_accounts")),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], name=op.f("fk_artifacts_build_id_builds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("build_id", "step", "path", name=op.f("uq_artifacts_build_id")),
    )
    op.create_index(op.f("ix_artifacts_build_id"), "artifacts", ["build_id"], unique=False)
    op.create_index(op.f("ix_artifacts_expires_at"), "artifacts", ["expires_at"], unique=False)
    op.create_table(
        "annotations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=150), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=500), nullable=False),
        sa.Column("classname", sa.String(length=500), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("time", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], name=op.f("fk_annotations_build_id_builds")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
    )
    op.create_index(op.f("ix_annotations_build_id"), "annotations", ["build_id"], unique=False)
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resume_steps", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_column("resume_steps")
    op.drop_index(op.f("ix_annotations_build_id"), table_name="annotations")
    op.drop_table("annotations")
    op.drop_index(op.f("ix_artifacts_expires_at"), table_name="artifacts")
    op.drop_index(op.f("ix_artifacts_build_id"), table_name="artifacts")
    op.drop_table("artifacts")
