"""Approving and denying pending-approval steps: the API, and delivery to the runner by poll and heartbeat."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

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


# --- who may answer: the pipeline's approval rules ----------------------------------------------------


async def token(stack: Stack, name: str, role: str) -> str:
    r = await stack.api("POST", "/tokens", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    value: str = r.json()["token"]
    return value


async def gated_build(stack: Stack, *, started_by: str, **rules: Any) -> str:
    runner = await stack.register()
    await stack.pipeline("gated", GATED, **rules)
    build = await stack.run("gated", token=started_by)
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json=PLAN)
    r = await job_call(stack, task, "POST", "/steps/gate", json={"status": "pending-approval"})
    assert r.status_code == 200, r.text
    return str(build["id"])


async def test_nobody_approves_a_build_they_started_when_the_pipeline_asks_for_another(stack: Stack) -> None:
    alice, bob = await token(stack, "alice", "developer"), await token(stack, "bob", "developer")
    build_id = await gated_build(stack, started_by=alice, approval_requires_other=True)
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=alice)
    assert r.status_code == 403
    assert r.json()["message"] == f"pipeline gated needs someone other than who started build {build_id} to approve it"
    assert r.json()["error"] == "approver_is_initiator"
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/deny", token=alice)
    assert r.status_code == 403  # nor deny it: the answer is someone else's to give
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=bob)
    assert r.status_code == 200, r.text
    assert next(s for s in r.json()["steps"] if s["name"] == "gate")["decided_by"] == "bob"


async def test_without_the_rule_the_starter_may_approve_their_own_build(stack: Stack) -> None:
    alice = await token(stack, "alice", "developer")
    build_id = await gated_build(stack, started_by=alice)
    assert (await stack.api("GET", "/pipelines/gated")).json()["approval_requires_other"] is False
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=alice)
    assert r.status_code == 200, r.text


async def test_approvals_restricted_to_a_role_refuse_the_roles_below_it(stack: Stack) -> None:
    dev, admin = await token(stack, "dev", "developer"), await token(stack, "lead", "admin")
    viewer = await token(stack, "watcher", "viewer")
    build_id = await gated_build(stack, started_by=dev, approval_role="admin")
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=dev)
    assert r.status_code == 403
    assert r.json()["message"] == "approvals of pipeline gated need the admin role; your token has developer"
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=viewer)
    assert r.status_code == 403
    assert r.json()["message"] == "this needs the developer role; your token has viewer"
    r = await stack.api("POST", f"/builds/{build_id}/steps/gate/approve", token=admin)
    assert r.status_code == 200, r.text


async def test_the_rules_are_changed_with_the_pipeline_and_a_bad_role_is_refused(stack: Stack) -> None:
    await stack.pipeline("gated", GATED)
    r = await stack.api("PATCH", "/pipelines/gated", json={"approval_role": "admin", "approval_requires_other": True})
    assert (r.json()["approval_role"], r.json()["approval_requires_other"]) == ("admin", True)
    r = await stack.api("PATCH", "/pipelines/gated", json={"approval_role": "owner"})
    assert r.status_code == 422
    assert "viewer, developer, admin" in r.json()["message"]


async def test_the_cli_sets_the_approval_rules_on_create_and_update(stack: Stack, tmp_path: Path) -> None:
    from tests.server.test_triggers import outpost, serving

    yaml = tmp_path / "codefresh.yml"
    yaml.write_text(GATED)
    async with serving(stack) as url:
        code, out, err = await outpost(
            url, stack.admin_token, "pipeline", "create", "gated", "--file", str(yaml), "--approval-role", "admin",
            "--json",
        )  # fmt: skip
        assert code == 0, err
        assert (json.loads(out)["approval_role"], json.loads(out)["approval_requires_other"]) == ("admin", False)
        code, out, err = await outpost(
            url, stack.admin_token, "pipeline", "update", "gated", "--approval-requires-other"
        )
        assert code == 0, err
        assert out.strip() == "pipeline gated: approvals by admin or above, not by whoever started the build"
        code, out, err = await outpost(
            url, stack.admin_token, "pipeline", "update", "gated", "--approval-role", "owner"
        )
        assert code != 0
    shown = (await stack.api("GET", "/pipelines/gated")).json()
    assert (shown["approval_role"], shown["approval_requires_other"]) == ("admin", True)


async def test_a_developer_may_make_approvals_stricter_but_only_an_admin_looser(stack: Stack) -> None:
    dev = await token(stack, "dev", "developer")
    await stack.pipeline("gated", GATED, approval_role="admin", approval_requires_other=True)
    for loosen in ({"approval_role": "developer"}, {"approval_requires_other": False}):
        r = await stack.api("PATCH", "/pipelines/gated", token=dev, json=loosen)
        assert r.status_code == 403, r.text
        assert r.json()["message"] == "this needs the admin role; your token has developer"
    r = await stack.api("POST", "/pipelines", token=dev, json={"name": "lax", "yaml": GATED, "approval_role": "viewer"})
    assert r.status_code == 403
    r = await stack.api(
        "POST", "/pipelines", token=dev, json={"name": "strict", "yaml": GATED, "approval_role": "admin"}
    )
    assert r.status_code == 201, r.text
    shown = (await stack.api("GET", "/pipelines/gated")).json()
    assert (shown["approval_role"], shown["approval_requires_other"]) == ("admin", True)
    r = await stack.api("PATCH", "/pipelines/gated", json={"approval_role": "developer"})  # an admin may
    assert r.status_code == 200
