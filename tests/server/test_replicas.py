"""Replicas in one process: two control planes (the real app, each with its own dispatcher and link) on one
PostgreSQL database. A poll held by one is ended at once by work queued through the other, also after its link
to the database dropped; migrations started together both succeed; one replica at a time leads the jobs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import OutpostError
from outpost.server import db
from outpost.server.models import Build
from outpost.server.replicas import ReplicaLink, _coalesce, _payloads
from outpost.server.store import builds, logs
from outpost.wire import PREFIX, PollRequest
from tests.stack import Stack, running_stack, settings_for

pytestmark = pytest.mark.timeout(120)
HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
WAIT = 20.0  # how long a poll may be held: an answer well before it ends was woken, not timed out


def link(stack: Stack) -> ReplicaLink:
    found = stack.services.replicas
    assert found is not None, "a control plane on PostgreSQL has a replica link"
    return found


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def poll(stack: Stack, token: str, **fields: Any) -> httpx.Response:
    """One poll by the runner whose token is `token`, through `stack`."""
    async with stack.raw() as c:
        body = PollRequest(**fields).model_dump(exclude_none=True)
        return await c.post(PREFIX + "/poll", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def claimed(stack: Stack, token: str) -> dict[str, Any]:
    """The task a poll that does not wait, with one free slot, is given."""
    task: dict[str, Any] = (await poll(stack, token, wait=0, free_slots=1)).json()["task"]
    return task


async def held_poll(stack: Stack, token: str, **fields: Any) -> tuple[asyncio.Task[httpx.Response], float]:
    """A poll held by `stack` (by default its runner has a free slot), once it waits; and when it began."""
    began = time.monotonic()
    task = asyncio.create_task(poll(stack, token, **{"wait": WAIT, "free_slots": 1, **fields}))
    await until(lambda: stack.services.wakeups.idle_polls == 1)
    return task, began


async def woken(held: asyncio.Task[httpx.Response], began: float, why: str = "it was not woken") -> dict[str, Any]:
    """The task a held poll answered with, once it has; it must have been woken, well before its wait ran out."""
    answer = await held
    took = time.monotonic() - began
    assert answer.status_code == 200, answer.text
    assert took < WAIT / 2, f"the poll waited {took:.1f}s: {why}"
    task: dict[str, Any] = answer.json()["task"]
    return task


async def two_replicas(pg_url: str, tmp_path: Path) -> Any:
    # One data dir for both: the second reads the admin token the first wrote (as an operator would copy it).
    settings = settings_for(pg_url, tmp_path / "data", poll_timeout=WAIT, lease_ttl=300.0)
    return running_stack(settings), running_stack(settings)


@contextlib.asynccontextmanager
async def linked_replicas(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two running replicas, once each listens for the other's signals."""
    first, second = await two_replicas(pg_url, tmp_path)
    async with first as a, second as b:
        await until(lambda: link(a).connected.is_set() and link(b).connected.is_set())
        yield a, b


async def test_a_build_queued_through_one_replica_ends_a_poll_held_by_another_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    async with linked_replicas(pg_url, tmp_path) as (a, b):
        await a.pipeline("hello", HELLO)
        registered = await a.register()
        held, began = await held_poll(b, registered.runner_token)
        await a.run("hello")
        task = await woken(held, began)
    assert task["kind"] == "run_build"


async def test_a_cancel_asked_through_one_replica_reaches_the_runner_whose_poll_another_holds_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    async with linked_replicas(pg_url, tmp_path) as (a, b):
        await a.pipeline("hello", HELLO)
        registered = await a.register()
        build = await a.run("hello")
        claim = await claimed(b, registered.runner_token)  # the runner claims it through B
        assert claim["build_id"] == build["id"]
        held, began = await held_poll(b, registered.runner_token, free_slots=0, running=[build["id"]])
        assert (await a.api("POST", f"/builds/{build['id']}/cancel")).status_code == 200
        task = await woken(held, began)
    assert (task["kind"], task["build_id"]) == ("cancel_build", build["id"])


async def test_a_git_query_asked_through_one_replica_reaches_the_runner_whose_poll_another_holds_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    async with linked_replicas(pg_url, tmp_path) as (a, b):
        body = {"kind": "git", "name": "corp", "url": "https://git.corp.example", "behind_firewall": True}
        assert (await a.api("POST", "/integrations", json=body)).status_code == 201
        registered = await a.register()
        held, began = await held_poll(b, registered.runner_token, free_slots=0)  # no build slot: queries only
        asking = asyncio.create_task(
            a.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app", "wait": WAIT})
        )
        try:
            task = await woken(held, began)
        finally:  # the query is left unanswered: only its delivery to the runner counts here
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asking
    assert task["kind"] == "git_query"


async def test_a_replica_whose_link_dropped_reconnects_and_its_held_poll_finds_the_build_queued_meanwhile(
    pg_url: str, tmp_path: Path
) -> None:
    async with linked_replicas(pg_url, tmp_path) as (a, b):
        await a.pipeline("hello", HELLO)
        registered = await a.register()
        held, began = await held_poll(b, registered.runner_token)
        async with a.services.tx() as session:  # as an administrator would, or a network cut
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": link(b)._pid})
        await until(lambda: not link(b).connected.is_set())
        await a.run("hello")  # its NOTIFY finds B not listening
        task = await woken(held, began, "the reconnect did not make it look again")
        assert link(b).connected.is_set()
    assert task["kind"] == "run_build"


async def test_two_replicas_migrating_an_empty_database_at_once_both_succeed(pg_url: str) -> None:
    engines = [db.make_engine(pg_url), db.make_engine(pg_url)]
    try:
        await asyncio.gather(*(db.migrate(engine) for engine in engines))
        async with engines[0].connect() as conn:
            versions = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar()
    finally:
        for engine in engines:
            await engine.dispose()
    assert versions == 1


async def test_one_replica_leads_the_jobs_and_another_takes_them_over_without_refreshing_leases_when_it_stops(
    pg_url: str, tmp_path: Path
) -> None:
    managers = list(await two_replicas(pg_url, tmp_path))
    stacks = [await managers[0].__aenter__()]
    try:
        await asyncio.sleep(2.0)  # the second starts later: its own stretch of service is shorter
        stacks.append(await managers[1].__aenter__())
        await until(lambda: any(link(s).leader for s in stacks))
        await asyncio.sleep(1.5)  # both have tried for the lock by now
        leaders = [i for i, s in enumerate(stacks) if link(s).leader]
        assert len(leaders) == 1
        leader, other = stacks[leaders[0]], stacks[1 - leaders[0]]
        served = max(leader.services.availability.served_for(), other.services.availability.served_for())
        await managers.pop(leaders[0]).__aexit__(None, None, None)  # the leader stops cleanly (a rolling restart)
        began = time.monotonic()
        await until(lambda: link(other).leader, timeout=10)
        assert time.monotonic() - began < 3, "the other replica took more than a lock retry to take over"
        # The installation was served all along: the new leader counts from the longer stretch, not from now.
        assert other.services.availability.served_for() >= served
    finally:
        for manager in managers:
            await manager.__aexit__(None, None, None)


def test_thousands_of_signals_go_out_merged_in_payloads_under_postgresqls_limit() -> None:
    lines = [f"k build:{i:032d}" for i in range(5000)] + ["w rt1 1"] * 300 + ["w rt2 2", "r runner-1", "r runner-1"]
    payloads = _payloads(_coalesce(lines))
    assert all(len(p.encode()) < 8000 for p in payloads)
    sent = [line for p in payloads for line in p.split("\n")]
    assert sorted(sent) == sorted([*(f"k build:{i:032d}" for i in range(5000)), "w rt1 300", "w rt2 2", "r runner-1"])


async def test_a_replica_started_with_another_secret_key_is_refused_and_names_the_setting(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_stack(settings_for(pg_url, tmp_path / "a", secret_key=Fernet.generate_key().decode())) as a:
        await a.pipeline("hello", HELLO)
        other = settings_for(pg_url, tmp_path / "a", secret_key=Fernet.generate_key().decode())
        with pytest.raises(OutpostError, match="OUTPOST_SECRET_KEY"):
            async with running_stack(other):
                pass


async def test_a_log_follower_never_skips_a_chunk_that_commits_after_a_later_chunk_of_another_step(
    pg_url: str, tmp_path: Path
) -> None:
    """Two appends to two steps of one build at once (as two replicas may take them): the follower reading between
    their commits must not move its cursor past the one still uncommitted."""
    async with running_stack(settings_for(pg_url, tmp_path / "data", lease_ttl=300.0)) as a:
        await a.pipeline("hello", HELLO)
        registered = await a.register()
        await a.run("hello")
        task = await claimed(a, registered.runner_token)
        sessions = a.services.sessions

        async def append(session: AsyncSession, step: str, data: bytes) -> None:
            held = await builds.hold(session, task["build_id"], task["lease_id"], task["job_token"])
            await logs.append(session, held, step, 0, data)

        async def follow(after: int) -> list[logs.Piece]:
            async with sessions.begin() as session:
                build = await session.get_one(Build, task["build_id"])
                return await logs.read_after(session, build, after, 1 << 20)

        async def second() -> None:
            async with sessions.begin() as session:
                await append(session, "two", b"second\n")

        async with sessions.begin() as first:
            await append(first, "one", b"first\n")  # its chunk has the lower id, and is not committed yet
            later = asyncio.create_task(second())
            await asyncio.wait([later], timeout=1.0)
            seen = await follow(0)  # a follower reads meanwhile
        await later
        seen += await follow(seen[-1].cursor if seen else 0)
    assert sorted((p.step, p.data) for p in seen) == [("one", b"first\n"), ("two", b"second\n")]
