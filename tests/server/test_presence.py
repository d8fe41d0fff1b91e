"""When runners were last seen: written in one batch a second (server/presence.py), and still what the API's "online"
says: a polling runner shows online within that second, one that stopped polling goes offline."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from outpost.server.models import Runner
from outpost.server.presence import FLUSH_EVERY
from outpost.wire import PREFIX, PollRequest
from tests.stack import Stack, running_stack, settings_for


async def poll(stack: Stack, token: str) -> httpx.Response:
    async with stack.raw() as c:
        body = PollRequest(wait=0.0).model_dump(exclude_none=True)
        return await c.post(PREFIX + "/poll", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


async def listed(stack: Stack, runner_id: str) -> dict[str, Any]:
    r = await stack.api("GET", "/runners")
    assert r.status_code == 200, r.text
    (found,) = [x for x in r.json() if x["id"] == runner_id]
    return dict(found)


def seen_at(found: dict[str, Any]) -> float:
    """The listed `last_seen_at` (ISO 8601, to the millisecond) as seconds since the epoch."""
    return datetime.fromisoformat(found["last_seen_at"].replace("Z", "+00:00")).timestamp()


async def last_seen_long_ago(stack: Stack, runner_id: str) -> float:
    """The runner was last heard from an hour ago (it registered, then went away)."""
    long_ago = time.time() - 3600
    async with stack.services.tx() as session:
        (await session.get_one(Runner, runner_id)).last_seen_at = long_ago
    return long_ago


async def online_within(stack: Stack, runner_id: str, seconds: float) -> dict[str, Any]:
    """The runner as listed once the API says it is online; fails if that takes longer than `seconds`."""
    async with asyncio.timeout(seconds):
        while not (found := await listed(stack, runner_id))["online"]:
            await asyncio.sleep(0.05)
    return found


async def test_a_runner_that_polls_again_shows_online_within_a_flush(stack: Stack) -> None:
    runner = await stack.register()
    await last_seen_long_ago(stack, runner.runner_id)
    assert (await listed(stack, runner.runner_id))["online"] is False

    before = time.time()
    assert (await poll(stack, runner.runner_token)).status_code == 204
    after = time.time()

    found = await online_within(stack, runner.runner_id, 10 * FLUSH_EVERY)  # bounded; written within FLUSH_EVERY
    assert before - 0.001 <= seen_at(found) <= after  # when it polled, not when the batch was written


async def test_a_runner_that_stopped_polling_stays_offline_while_others_are_written(stack: Stack) -> None:
    gone, polling = await stack.register(), await stack.register()
    long_ago = await last_seen_long_ago(stack, gone.runner_id)
    await last_seen_long_ago(stack, polling.runner_id)

    assert (await poll(stack, polling.runner_token)).status_code == 204
    await online_within(stack, polling.runner_id, 10 * FLUSH_EVERY)

    found = await listed(stack, gone.runner_id)
    assert found["online"] is False
    assert abs(seen_at(found) - long_ago) < 0.001


async def test_a_flush_never_moves_last_seen_backwards(stack: Stack) -> None:
    runner = await stack.register()
    await poll(stack, runner.runner_token)  # noted in memory at this time
    later = time.time() + 60  # another replica heard from it later and wrote first
    async with stack.services.tx() as session:
        (await session.get_one(Runner, runner.runner_id)).last_seen_at = later

    await stack.services.presence.flush(stack.services.sessions)

    assert abs(seen_at(await listed(stack, runner.runner_id)) - later) < 0.001


async def test_what_was_noted_is_written_when_the_control_plane_stops(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path / "data")
    async with running_stack(settings) as stack:
        runner = await stack.register()
        await last_seen_long_ago(stack, runner.runner_id)
        before = time.time()
        assert (await poll(stack, runner.runner_token)).status_code == 204
        # The control plane stops at once, most likely before the next flush.

    async with running_stack(settings) as stack:
        assert seen_at(await listed(stack, runner.runner_id)) >= before - 0.001
