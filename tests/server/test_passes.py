"""Runner passes (server/passes.py): a renewal in a quiet runtime skips its authentication, yet a revocation or a drain
takes effect on the runner's very next poll, here or signalled by another replica, and a revocation that reached the
store without any signal still hands the runner nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from outpost.server.models import Runner
from outpost.wire import PREFIX, PollRequest
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


async def poll(stack: Stack, token: str, **body: Any) -> httpx.Response:
    request = PollRequest(**{"wait": 0.0, **body})
    async with stack.raw() as c:
        payload = request.model_dump(exclude_none=True)
        return await c.post(PREFIX + "/poll", json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=30)


async def with_a_pass(stack: Stack) -> tuple[str, str]:
    """A runner whose token has a pass, in a quiet runtime: its next renewal would not look at the store."""
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    assert (await poll(stack, runner.runner_token)).status_code == 204
    assert len(stack.services.wakeups.passes) == 1
    return runner.runner_id, runner.runner_token


async def test_a_runner_revoked_after_its_token_got_a_pass_is_refused_on_its_next_poll(stack: Stack) -> None:
    runner_id, token = await with_a_pass(stack)

    assert (await stack.api("DELETE", f"/runners/{runner_id}")).status_code == 200

    assert (await poll(stack, token)).status_code == 401


async def test_a_held_poll_of_a_runner_revoked_meanwhile_answers_401(stack: Stack) -> None:
    runner_id, token = await with_a_pass(stack)
    held = asyncio.create_task(poll(stack, token, wait=4.0))  # a renewal through its pass
    async with asyncio.timeout(10):
        while stack.services.wakeups.idle_polls < 1:
            await asyncio.sleep(0.01)

    assert (await stack.api("DELETE", f"/runners/{runner_id}")).status_code == 200

    assert (await asyncio.wait_for(held, 10)).status_code == 401


async def test_a_revocation_through_another_replica_takes_effect_once_its_signal_arrives(stack: Stack) -> None:
    runner_id, token = await with_a_pass(stack)
    async with stack.services.tx() as session:  # what the other replica commits
        (await session.get_one(Runner, runner_id)).revoked_at = time.time()

    stack.services.wakeups.deliver(f"r {runner_id}")  # and then its NOTIFY, as the replica link hands it over

    assert (await poll(stack, token)).status_code == 401


async def test_a_revocation_that_reached_the_store_without_a_signal_still_hands_the_runner_nothing(
    stack: Stack,
) -> None:
    runner_id, token = await with_a_pass(stack)
    async with stack.services.tx() as session:  # no signal at all (someone edited the table)
        (await session.get_one(Runner, runner_id)).revoked_at = time.time()
    held = asyncio.create_task(poll(stack, token, wait=4.0))  # its pass lets the renewal wait...
    async with asyncio.timeout(10):
        while stack.services.wakeups.idle_polls < 1:
            await asyncio.sleep(0.01)

    build = await stack.run("hello")  # ...but the look a build wakes it for reads the runner from the store

    assert (await asyncio.wait_for(held, 10)).status_code == 401
    assert (await stack.build(build["id"]))["status"] == "queued"


async def test_a_runner_drained_after_its_token_got_a_pass_is_handed_no_build(stack: Stack) -> None:
    runner_id, token = await with_a_pass(stack)
    assert (await stack.api("POST", f"/runners/{runner_id}/drain")).status_code == 200
    build = await stack.run("hello")

    assert (await poll(stack, token)).status_code == 204
    assert (await stack.build(build["id"]))["status"] == "queued"

    assert (await stack.api("POST", f"/runners/{runner_id}/undrain")).status_code == 200
    answer = await poll(stack, token)
    assert answer.status_code == 200
    assert answer.json()["task"]["build_id"] == build["id"]
