"""Database engine, sessions and migrations (Alembic, run at start-up).

On PostgreSQL several control-plane replicas may start at once: migrations run under a transaction-level
advisory lock, so one replica migrates while the others wait and then find the schema current.

On SQLite the statements run on the event loop's own thread (`InlineSQLite`), not in aiosqlite's worker
thread: a statement on the control plane's small, local database takes microseconds, and handing each one to
a thread and back cost more than the statement (four wake-ups a statement; docs/benchmarks.md, "Fleet scale").
What does take time, copying the write-ahead log into the database file and syncing it (a checkpoint), runs
in a thread of its own (`Checkpointer`), so that no commit on the event loop pays for it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

MIGRATIONS = Path(__file__).parent / "migrations"
# Advisory lock keys (PostgreSQL), one per thing that replicas must do one at a time.
log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x6F75_7470_0002
BOOTSTRAP_LOCK = 0x6F75_7470_0003


def make_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection: SQLite allows one writer, and a single connection never waits on a lock.
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(parsed)
    connector = partial(sqlite3.connect, *args, **{**kwargs, "check_same_thread": False})

    async def connect() -> InlineSQLite:
        return await InlineSQLite(connector)._connect()

    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60, async_creator=connect)
    checkpointer = Checkpointer(connector) if parsed.database and parsed.database != ":memory:" else None
    # The commit that grows the log to this many pages checkpoints it itself: only if the checkpointer's thread
    # falls that far behind (SQLite's own default, 1,000 pages, when there is no such thread).
    backstop = Checkpointer.BACKSTOP_PAGES if checkpointer is not None else 1000

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        pragmas = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000")
        for pragma in (*pragmas, f"wal_autocheckpoint={backstop}", f"journal_size_limit={64 << 20}"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        if checkpointer is not None:
            checkpointer.start()

    if checkpointer is not None:
        event.listen(engine.sync_engine, "engine_disposed", lambda _engine: checkpointer.stop())
    return engine


class Checkpointer:
    """Checkpoints a SQLite database's write-ahead log from a thread with a connection of its own.

    SQLite checkpoints by itself inside the commit that grows the log past `wal_autocheckpoint` pages: with the
    statements on the event loop's thread, that commit held the loop while pages were copied and synced (py-spy
    while a 200 MB log was stored: a third of the loop's busy time). Here a thread runs a PASSIVE checkpoint every
    INTERVAL seconds: it never waits for the writer, SQLite releases the GIL while it copies and syncs, and with
    nothing new in the log it costs microseconds. The commits' own checkpoint stays as a backstop far behind."""

    INTERVAL = 0.25  # at 100 MB/s of log bytes, ~25 MB a checkpoint
    BACKSTOP_PAGES = 20_000  # ~80 MB of log (4 KiB pages)

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        self._connector = connector
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="outpost-sqlite-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            conn = self._connector()
        except sqlite3.Error as exc:
            log.warning("no checkpoints of the SQLite log from a thread (the commits make them): %s", exc)
            return
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self.INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the file is locked or went away: the next round tries again
                    log.debug("checkpoint of the SQLite log failed: %s", exc)
        finally:
            conn.close()


class InlineSQLite(aiosqlite.Connection):
    """aiosqlite's connection without its worker thread: each call runs at once, on the calling (event loop's)
    thread, and SQLAlchemy's aiosqlite dialect drives it unchanged.

    What this gives up: a statement blocks the event loop while it runs, and so would a wait for another
    process's write lock (`busy_timeout`). The control plane is that database's only writer (one connection,
    `make_engine`), and its longest statements — a page of a log, a page of a listing — take milliseconds.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)  # its Thread object is made, never started
        self._tx = _RunNow()  # type: ignore[assignment]  # SQLAlchemy sets the isolation level through the queue itself

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineSQLite:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Any:
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


class _RunNow:
    """Stands in for aiosqlite's queue to its thread: runs what is put at once and settles its future."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting caller, as aiosqlite's thread does
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


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
