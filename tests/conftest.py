"""Fixtures shared by the whole suite."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.components import missing_components, postgres_cluster
from tests.stack import Stack, running_stack, settings_for

# A hang after a failed test must still be reported, with where it was stuck (see tests/watchdog.py).
pytest_plugins = ["tests.watchdog"]


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@contextlib.asynccontextmanager
async def fresh_postgres_database(base: str, prefix: str = "t_") -> AsyncIterator[str]:
    """An empty database of its own on the session's PostgreSQL cluster, dropped afterwards."""
    import asyncpg

    name = prefix + uuid.uuid4().hex[:12]
    admin = base.replace("postgresql+asyncpg", "postgresql") + "/postgres"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    try:
        yield f"{base}/{name}"
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test gets an empty database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}"
        return
    async with fresh_postgres_database(request.getfixturevalue("postgres_base")) as url:
        yield url


@pytest.fixture
async def pg_url(postgres_base: str) -> AsyncIterator[str]:
    """An empty database on PostgreSQL only (what replicas need)."""
    async with fresh_postgres_database(postgres_base, "x_") as url:
        yield url


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(settings_for(database_url, tmp_path / "data")) as s:
        yield s


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which components this machine lacks and how many tests skipped for each (CI fails instead)."""
    counts = missing_components(terminalreporter.stats.get("skipped", []))
    if not counts:
        return
    terminalreporter.section("components missing on this machine")
    for reason, n in sorted(counts.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{n:5d} skipped: {reason}")
    terminalreporter.write_line(
        "Install them all with `sudo bash .ci/system-deps` (Debian), then run `make test` again."
    )
