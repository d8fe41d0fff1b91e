"""Alembic environment: migrations always run on a connection handed over by outpost.server.db."""

from alembic import context

from outpost.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through outpost.server.db.migrate(), which provides a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
