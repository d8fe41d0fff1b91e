"""Approving and denying pending-approval steps: the API, and delivery to the runner by poll and heartbeat."""

from __future__ import annotations

import asyncio

from tests.server.test_protocol import claim, job_call, poll
from tests.stack import Stack

GATED = "version: '1.0'\nsteps:\n  gate:\n    type: pending-approval\n  after:\n    image: x\n    commands: [echo]\n"
PLAN = {"steps": [{"name": "gate", "type": "pending-approval"}, {"name": "after"}]}


async def waiting_build(stack: Stack) -> tuple[str, str, object]:
    runner = await stack.register()
    await stack.pipeline("gated", GATED)
    build = await stack.run("gated")
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json=PLAN)
    r = await job_call(stack, task, "POST", "/steps/gate", json={"status": "pending-approval"})
    assert r.status_code == 200, r.text
    return build["id"], runner.runner_token, task


async def test_an_approval_reaches_the_waiting_runner_at_once_and_once(stack: Stack) -> None:
    build_id, runner_token, task = await waiting_build(stack)
    waiting = asyncio.create_task(poll(stack, runner_token, free_slots=0, running=[build_id], wait=30))
    await asyncio.sleep(0.2)
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve")
    assert r.status_code == 200, r.text
    gate = next(s for s in r.json()["steps"] if s["name"] == "gate")
    assert gate["decision"] == "approved"
    assert gate["decided_by"]
    answer = await asyncio.wait_for(waiting, 10)
    assert answer.json()["task"] == {
        "kind": "approval",
        "build_id": build_id,
        "approval": {"step": "gate", "decision": "approved", "by": gate["decided_by"]},
    }
    # Handed over once by poll; every heartbeat repeats it while the step still waits.
    again = await poll(stack, runner_token, free_slots=0, running=[build_id], wait=0)
    assert again.status_code == 204
    beat = await job_call(stack, task, "POST", "/heartbeat")  # type: ignore[arg-type]
    assert beat.json()["approvals"] == [{"step": "gate", "decision": "approved", "by": gate["decided_by"]}]
    await job_call(stack, task, "POST", "/steps/gate", json={"status": "approved"})  # type: ignore[arg-type]
    beat = await job_call(stack, task, "POST", "/heartbeat")  # type: ignore[arg-type]
    assert beat.json()["approvals"] == []


async def test_a_second_answer_and_answers_to_other_steps_are_refused(stack: Stack) -> None:
    build_id, _, _ = await waiting_build(stack)
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/deny")
    assert r.status_code == 200
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve")
    assert r.status_code == 409
    assert "already denied" in r.json()["message"]
    r = await stack.api("POST", f"/builds/{build_id}/steps/after/approve")
    assert r.status_code == 409
    assert "not an approval step" in r.json()["message"]
    r = await stack.api("POST", f"/builds/{build_id}/steps/nope/approve")
    assert r.status_code == 404


async def test_a_step_that_does_not_wait_yet_cannot_be_answered(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("gated", GATED)
    build = await stack.run("gated")
    r = await stack.api("POST", f"/builds/{build['id']}/steps/gate/approve")
    assert r.status_code == 409  # queued: not running
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json=PLAN)
    r = await stack.api("POST", f"/builds/{build['id']}/steps/gate/approve")
    assert r.status_code == 409
    assert "not waiting for approval" in r.json()["message"]


async def test_another_account_cannot_answer(stack: Stack) -> None:
    build_id, _, _ = await waiting_build(stack)
    other = await stack.api("POST", "/accounts", json={"name": "acme"})
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=other.json()["token"])
    assert r.status_code == 404
    r = await stack.api("GET", f"/builds/{build_id}")
    assert next(s for s in r.json()["steps"] if s["name"] == "gate")["decision"] is None
