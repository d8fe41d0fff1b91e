"""Leases judged on the control plane's own liveness, and the late log of a lease that expired.

The in-process control plane is stalled for real: a blocking sleep holds its event loop, as a GC pause
or a stopped process would, so neither its reaper nor its handlers run meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from outpost.wire import RunBuildTask
from tests.server.test_protocol import HELLO, claim, claimed, job_call, log_text, wait_for_status
from tests.stack import Stack


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def running(stack: Stack) -> RunBuildTask:
    """A claimed build whose step `hello` runs and has printed `line 1`."""
    task = await claimed(stack)
    assert (await job_call(stack, task, "POST", "/started", json={"steps": [{"name": "hello"}]})).status_code == 200
    report = {
        "logs": [{"stream": "hello", "offset": 0, "data": b64(b"line 1\n")}],
        "steps": [{"name": "hello", "update": {"status": "running"}}],
    }
    assert (await job_call(stack, task, "POST", "/report", json=report)).status_code == 200
    return task


async def late(stack: Stack, task: RunBuildTask, *logs: tuple[str, int, bytes], **kwargs: Any) -> Any:
    body = {"logs": [{"stream": s, "offset": o, "data": b64(d)} for s, o, d in logs]}
    return await job_call(stack, task, "POST", "/late-logs", json=body, **kwargs)


async def test_a_control_plane_stalled_for_twice_the_lease_ttl_fails_no_build(stack: Stack) -> None:
    task = await running(stack)
    ttl = stack.services.settings.lease_ttl

    time.sleep(2 * ttl + 0.5)  # the whole control plane stands still: no heartbeat can be heard

    beat = await job_call(stack, task, "POST", "/heartbeat")
    assert beat.status_code == 200, beat.text
    for _ in range(3):  # the reaper has had its rounds since: the lease lives on while renewed
        await asyncio.sleep(ttl / 2)
        assert (await job_call(stack, task, "POST", "/heartbeat")).status_code == 200
    assert (await stack.build(task.build_id))["status"] == "running"
    finish = {"logs": [{"stream": "hello", "offset": 7, "data": b64(b"line 2\n")}], "finish": {"status": "success"}}
    assert (await job_call(stack, task, "POST", "/report", json=finish)).status_code == 200
    assert (await stack.build(task.build_id))["status"] == "success"
    assert await log_text(stack, task.build_id, "hello") == b"line 1\nline 2\n"


async def test_after_a_stall_a_silent_runner_is_still_found_lost_within_the_ttl_and_five_seconds(
    stack: Stack,
) -> None:
    task = await running(stack)
    ttl = stack.services.settings.lease_ttl
    time.sleep(2 * ttl + 0.5)
    resumed = time.monotonic()

    build = await wait_for_status(stack, task.build_id, {"error"}, timeout=ttl + 5)
    assert build["message"] == "runner lost"
    assert time.monotonic() - resumed >= ttl  # a whole TTL of a responsive control plane first


async def test_the_expired_lease_hands_in_its_late_log_appended_and_marked_without_changing_a_status(
    stack: Stack,
) -> None:
    task = await running(stack)
    build = await wait_for_status(stack, task.build_id, {"error"}, timeout=15)
    assert build["message"] == "runner lost"

    r = await late(stack, task, ("hello", 7, b"line 2\nline 3\n"), ("$system", 0, b"[outpost] stopped\n"))
    assert r.status_code == 200, r.text
    mark = b"[outpost] 14 bytes of the log of step hello arrived after the lease expired\n"
    mark += b"[outpost] 18 bytes of the build's own log arrived after the lease expired\n"
    assert r.json()["sizes"] == {"hello": 21, "$system": 18 + len(mark)}
    assert await log_text(stack, task.build_id, "hello") == b"line 1\nline 2\nline 3\n"
    assert await log_text(stack, task.build_id, "$system") == b"[outpost] stopped\n" + mark

    # A resend changes nothing and marks nothing; the build's stream goes on at the control plane's end of it.
    again = await late(stack, task, ("hello", 7, b"line 2\nline 3\n"), ("$system", 0, b"[outpost] stopped\n"))
    assert again.json()["sizes"] == r.json()["sizes"]
    more = await late(stack, task, ("$system", 18 + len(mark), b"[outpost] bye\n"))
    assert more.status_code == 200
    system = await log_text(stack, task.build_id, "$system")
    assert system == b"[outpost] stopped\n" + mark + b"[outpost] bye\n" + (
        b"[outpost] 14 bytes of the build's own log arrived after the lease expired\n"
    )
    after = await stack.build(task.build_id)
    assert (after["status"], after["message"]) == ("error", "runner lost")
    assert [(s["name"], s["status"]) for s in after["steps"] if s["name"] == "hello"] == [("hello", "error")]


async def test_late_log_is_refused_to_a_live_lease_a_wrong_token_a_gap_and_an_unknown_step(stack: Stack) -> None:
    task = await running(stack)
    live = await late(stack, task, ("hello", 7, b"line 2\n"))
    assert (live.status_code, live.json()["error"]) == (409, "lease_live")

    await wait_for_status(stack, task.build_id, {"error"}, timeout=15)
    forged = await late(stack, task.model_copy(update={"job_token": "opj_forged"}), ("hello", 7, b"x\n"))
    assert forged.status_code == 401
    gap = await late(stack, task, ("hello", 9, b"x\n"))
    assert (gap.status_code, gap.json()["expected_offset"]) == (416, 7)
    unknown = await late(stack, task, ("nope", 0, b"x\n"))
    assert unknown.status_code == 404
    assert await log_text(stack, task.build_id, "hello") == b"line 1\n"


async def test_late_log_is_refused_to_a_lease_that_finished_or_was_superseded(stack: Stack) -> None:
    task = await running(stack)
    assert (await job_call(stack, task, "POST", "/finish", json={"status": "success"})).status_code == 200
    finished = await late(stack, task, ("hello", 7, b"line 2\n"))
    assert (finished.status_code, finished.json()["error"]) == (409, "lease_lost")

    lost, other = await stack.register(), await stack.register()
    await stack.pipeline("again", HELLO)
    build = await stack.run("again")
    first = await claim(stack, lost.runner_token)
    await wait_for_status(stack, build["id"], {"queued"}, timeout=15)  # never started: back to the queue
    await claim(stack, other.runner_token)
    superseded = await late(stack, first, ("hello", 0, b"x\n"))
    assert superseded.status_code == 409


async def test_a_revoked_runner_cannot_hand_in_late_log_with_a_lease_that_expired_before_the_revocation(
    stack: Stack,
) -> None:
    # Revocation ends only live leases: this one had already ended as expired, so its end_reason cannot tell.
    task = await running(stack)
    await wait_for_status(stack, task.build_id, {"error"}, timeout=15)
    for runner in (await stack.api("GET", "/runners")).json():
        assert (await stack.api("DELETE", f"/runners/{runner['id']}")).status_code == 200

    r = await late(stack, task, ("hello", 7, b"forged after the revocation\n"))
    assert r.status_code == 401, r.text
    assert await log_text(stack, task.build_id, "hello") == b"line 1\n"
