"""build numbers per pipeline (existing builds numbered in the order they were created; each pipeline counts
its last one), who cancelled a build, what its Git event said of the commit, the build a restart repeated, and
a pipeline's status badge key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nothing here makes SQLite copy a table (batch mode would, and dropping the old pipelines or builds table
    # fails while steps and leases point at it): columns are added with ALTER TABLE, uniqueness comes from
    # unique indexes, and builds.number is NOT NULL from the start through a default that is dropped once the
    # builds are numbered (kept on SQLite, which cannot drop it in place; every new build sets its number).
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_build_number", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("badge_key", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_pipelines_badge_key", ["badge_key"], unique=True)
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("cancelled_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("git_context", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("restarted_from", sa.String(length=32), nullable=True))
    # UPDATE … FROM: PostgreSQL and SQLite ≥ 3.33 both have it; one pass whatever the number of builds.
    op.execute(
        "UPDATE builds SET number = r.n FROM (SELECT id, ROW_NUMBER() OVER "
        "(PARTITION BY pipeline_id ORDER BY created_at, id) AS n FROM builds) AS r WHERE r.id = builds.id"
    )
    op.execute(
        "UPDATE pipelines SET last_build_number = "
        "(SELECT COALESCE(MAX(number), 0) FROM builds WHERE builds.pipeline_id = pipelines.id)"
    )
    if op.get_context().dialect.name != "sqlite":
        op.alter_column("builds", "number", existing_type=sa.Integer(), server_default=None)
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index("uq_builds_pipeline_number", ["pipeline_id", "number"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("uq_builds_pipeline_number")
        batch_op.drop_column("restarted_from")
        batch_op.drop_column("git_context")
        batch_op.drop_column("cancelled_by")
        batch_op.drop_column("number")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_index("ix_pipelines_badge_key")
        batch_op.drop_column("badge_key")
        batch_op.drop_column("last_build_number")
