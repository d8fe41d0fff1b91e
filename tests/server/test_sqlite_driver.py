"""SQLite runs on the event loop's own thread (`db.InlineSQLite`): no worker thread, and it behaves as a driver
should — errors reach the caller, a failed transaction leaves the connection usable, isolation levels switch."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from outpost.server.db import make_engine
from tests.stack import running_stack, settings_for

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


def sqlite_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "_connection_worker_thread" in t.name]


async def test_the_control_plane_serves_builds_without_a_thread_for_sqlite(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path}/outpost.db", tmp_path / "data")
    async with running_stack(settings) as stack:
        await stack.pipeline("hello", HELLO)
        async with stack.client() as api:
            r = await api.post("/api/v1/pipelines/hello/builds", json={})
            assert r.status_code == 201, r.text
            listed = await api.get("/api/v1/builds")
            assert [b["id"] for b in listed.json()] == [r.json()["id"]]
        assert sqlite_threads() == []


async def test_a_failed_statement_reaches_the_caller_and_the_connection_goes_on(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"))
            await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('b')"))
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
            await conn.rollback()  # 'b' goes too
        with pytest.raises(OperationalError, match="no such table"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT * FROM missing"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT name FROM t"))).scalars().all() == ["a"]
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("INSERT INTO t (name) VALUES ('c')"))
        async with engine.connect() as conn:  # the isolation level was given back with the connection
            assert await conn.get_isolation_level() == "SERIALIZABLE"
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 2
        assert sqlite_threads() == []
    finally:
        await engine.dispose()


async def test_concurrent_tasks_take_turns_on_the_one_connection(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE n (v INTEGER NOT NULL)"))

        async def add(v: int) -> None:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO n (v) VALUES (:v)"), {"v": v})
                await asyncio.sleep(0)  # another task's transaction waits for the pool, not inside ours
                await conn.execute(text("INSERT INTO n (v) VALUES (:v)"), {"v": -v})

        await asyncio.gather(*(add(v) for v in range(1, 51)))
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT v FROM n ORDER BY rowid"))).scalars().all()
        assert len(rows) == 100
        assert sum(rows) == 0
        assert all(rows[i] == -rows[i + 1] for i in range(0, 100, 2))  # each transaction's two rows together
    finally:
        await engine.dispose()


def checkpoint_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "outpost-sqlite-checkpoint"]


async def test_the_log_reaches_the_database_file_from_a_thread_and_the_thread_ends_with_the_engine(
    tmp_path: Path,
) -> None:
    """What commits write lands in the write-ahead log; a thread copies it into the database file, well before
    the log is long enough for a commit to checkpoint it itself (on the event loop)."""
    database = tmp_path / "t.db"
    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE blobs (data BLOB NOT NULL)"))
        assert checkpoint_threads() == ["outpost-sqlite-checkpoint"]
        for _ in range(8):  # 8 MiB, ~2,000 pages: a tenth of what makes a commit checkpoint
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO blobs (data) VALUES (randomblob(1048576))"))
        async with asyncio.timeout(10):
            while database.stat().st_size < 8 << 20:
                await asyncio.sleep(0.05)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*), sum(length(data)) FROM blobs"))).one() == (8, 8 << 20)
    finally:
        await engine.dispose()
    assert checkpoint_threads() == []
