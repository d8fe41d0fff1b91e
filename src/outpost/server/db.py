"""Database engine, sessions and migrations (Alembic, run at start-up).

On PostgreSQL several control-plane replicas may start at once: migrations run under a transaction-level
advisory lock, so one replica migrates while the others wait and then find the schema current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

MIGRATIONS = Path(__file__).parent / "migrations"
# Advisory lock keys (PostgreSQL), one per thing that replicas must do one at a time.
MIGRATION_LOCK = 0x6F75_7470_0002
BOOTSTRAP_LOCK = 0x6F75_7470_0003


def make_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection: SQLite allows one writer, and a single connection never waits on a lock.
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    return engine


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def one_at_a_time(session_or_conn: AsyncSession | AsyncConnection, key: int) -> None:
    """On PostgreSQL, waits for the advisory lock `key` and holds it until the transaction ends (so that
    replicas take their turns); nothing on SQLite, whose one writer already takes turns."""
    bind = session_or_conn if isinstance(session_or_conn, AsyncConnection) else session_or_conn.get_bind()
    if bind.dialect.name == "postgresql":
        await session_or_conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to the newest migration."""

    def upgrade(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "head")

    async with engine.begin() as conn:
        await one_at_a_time(conn, MIGRATION_LOCK)  # held until this transaction, with the migrations, commits
        await conn.run_sync(upgrade)
