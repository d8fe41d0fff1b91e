"""Kubernetes integrations: the API server's CA, a client certificate (its key is the sealed secret), the
namespace deploy steps act in, and the allow-list of pipelines that may use the integration (none until an
admin allows some, or all)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN (see 0008: a batch copy of a table others point at fails on SQLite).
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("namespace", sa.String(length=253), nullable=True))
        batch_op.add_column(sa.Column("ca_pem", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("client_cert_pem", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("allowed_pipelines", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("all_pipelines", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("integrations", schema=None) as batch_op:
        for column in ("all_pipelines", "allowed_pipelines", "client_cert_pem", "ca_pem", "namespace"):
            batch_op.drop_column(column)
