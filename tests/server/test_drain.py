"""Draining a runner (/api/v1/runners/{id}/drain, /undrain): it keeps the builds it holds and still hears their
cancels, is handed no new build, and a build queued meanwhile goes to another runner's poll at once. On SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from outpost.wire import PREFIX, PollRequest
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


async def poll(stack: Stack, token: str, **body: Any) -> httpx.Response:
    request = PollRequest(**{"wait": 0.0, "free_slots": 2, **body})
    async with stack.raw() as c:
        return await c.post(
            PREFIX + "/poll",
            json=request.model_dump(exclude_none=True),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )


async def runner_row(stack: Stack, runner_id: str) -> dict[str, Any]:
    rows = (await stack.api("GET", "/runners")).json()
    row: dict[str, Any] = next(r for r in rows if r["id"] == runner_id)
    return row


async def test_a_drained_runner_keeps_its_build_hears_its_cancel_and_is_handed_no_new_build(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO)
    a, b = await stack.register(), await stack.register()
    first = await stack.run("hello")
    claimed = await poll(stack, a.runner_token)
    assert claimed.json()["task"]["build_id"] == first["id"]

    r = await stack.api("POST", f"/runners/{a.runner_id}/drain")
    assert r.status_code == 200, r.text
    assert (r.json()["drain"], r.json()["builds"]) == ("draining", [first["id"]])

    second = await stack.run("hello")
    assert (await poll(stack, a.runner_token, running=[first["id"]])).status_code == 204
    assert (await poll(stack, b.runner_token)).json()["task"]["build_id"] == second["id"]
    assert (await stack.api("POST", f"/builds/{first['id']}/cancel")).status_code == 200
    cancel = (await poll(stack, a.runner_token, running=[first["id"]])).json()["task"]
    assert (cancel["kind"], cancel["build_id"]) == ("cancel_build", first["id"])

    audit = (await stack.api("GET", "/audit")).json()
    assert any(e["action"] == "runner.drain" for e in audit)


async def test_a_drained_runner_holding_nothing_is_drained_and_undrained_takes_builds_again(stack: Stack) -> None:
    await stack.pipeline("hello", HELLO)
    a = await stack.register()
    assert (await stack.api("POST", f"/runners/{a.runner_id}/drain")).json()["drain"] == "drained"
    build = await stack.run("hello")
    assert any("no runner" in w for w in build["warnings"])  # online, but drained: nobody will take it
    assert (await poll(stack, a.runner_token)).status_code == 204
    assert (await stack.build(build["id"]))["status"] == "queued"

    r = await stack.api("POST", f"/runners/{a.runner_id}/undrain")
    assert (r.status_code, r.json()["drain"]) == (200, "")
    assert (await poll(stack, a.runner_token)).json()["task"]["build_id"] == build["id"]
    assert (await runner_row(stack, a.runner_id))["builds"] == [build["id"]]


async def test_a_build_queued_after_a_waiting_runner_is_drained_goes_to_the_other_runner_at_once(
    stack: Stack,
) -> None:
    """The drained runner's poll waited first, so the dispatcher would wake it first: draining makes it look again
    and wait for builds no more, and the build goes straight to the other poll (well before the wait ends)."""
    wakeups = stack.services.wakeups
    await stack.pipeline("hello", HELLO)
    a = await stack.register()
    drained_poll = asyncio.create_task(poll(stack, a.runner_token, wait=30.0))
    async with asyncio.timeout(10):
        while wakeups.idle_polls < 1:
            await asyncio.sleep(0.02)
    b = await stack.register()
    other_poll = asyncio.create_task(poll(stack, b.runner_token, wait=30.0))
    async with asyncio.timeout(10):
        while wakeups.idle_polls < 2:
            await asyncio.sleep(0.02)

    assert (await stack.api("POST", f"/runners/{a.runner_id}/drain")).status_code == 200
    async with asyncio.timeout(10):
        while wakeups.idle_polls < 2:  # it looked again and waits, for anything but builds
            await asyncio.sleep(0.02)
    build = await stack.run("hello")
    async with asyncio.timeout(10):  # far less than the polls' 30 s wait
        answer = await other_poll
    assert answer.json()["task"]["build_id"] == build["id"]
    assert not drained_poll.done()
    await stack.api("POST", f"/runners/{a.runner_id}/undrain")
    second = await stack.run("hello")
    async with asyncio.timeout(10):
        assert (await drained_poll).json()["task"]["build_id"] == second["id"]


async def test_draining_an_unknown_or_revoked_runner_is_404_and_a_viewer_may_not(stack: Stack) -> None:
    a = await stack.register()
    assert (await stack.api("POST", "/runners/nope/drain")).status_code == 404
    viewer = (await stack.api("POST", "/tokens", json={"name": "v", "role": "viewer"})).json()["token"]
    assert (await stack.api("POST", f"/runners/{a.runner_id}/drain", token=viewer)).status_code == 403
    assert (await runner_row(stack, a.runner_id))["drain"] == ""
    assert (await stack.api("DELETE", f"/runners/{a.runner_id}")).status_code == 200
    assert (await stack.api("POST", f"/runners/{a.runner_id}/drain")).status_code == 404
