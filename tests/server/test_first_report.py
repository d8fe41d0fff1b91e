"""A build's `started` riding its first report (runner protocol v1, docs/protocol.md "report"), and the
`POST /started` of runners from before it, against the real app and both databases."""

from __future__ import annotations

import asyncio

from tests.server.test_metrics import scrape, value
from tests.server.test_protocol import b64, claimed, claimed_twice, job_call, log_text, raw, wait_for_status
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
PLAN = {"steps": [{"name": "hello", "title": "Say hi", "type": "freestyle"}], "runner_time": 1.0}
REPORT_ROUTE = "/api/runner/v1/builds/{build_id}/report"
STARTED_ROUTE = "/api/runner/v1/builds/{build_id}/started"


async def test_a_trivial_build_is_started_run_and_finished_by_one_report(stack: Stack) -> None:
    task = await claimed(stack)
    head = {
        "started": PLAN,
        "logs": [{"stream": "$system", "offset": 0, "size": 9}, {"stream": "hello", "offset": 0, "size": 3}],
        "steps": [
            {"name": "hello", "update": {"status": "running", "started_at": 2.0}},
            {"name": "hello", "update": {"status": "success", "exit_code": 0, "finished_at": 3.0}},
        ],
        "finish": {"status": "success"},
    }
    first = await job_call(stack, task, "POST", "/report", **raw(head, b"[outpost]", b"hi\n"))
    assert first.status_code == 200, first.text
    resent = await job_call(stack, task, "POST", "/report", **raw(head, b"[outpost]", b"hi\n"))
    assert resent.json() == first.json() == {"sizes": {"$system": 9, "hello": 3}}

    build = await stack.build(task.build_id)
    assert build["status"] == "success"
    assert build["started_at"] is not None
    assert [(s["name"], s["title"], s["status"]) for s in build["steps"] if s["name"] == "hello"] == [
        ("hello", "Say hi", "success")
    ]
    assert await log_text(stack, task.build_id, "hello") == b"hi\n"
    found = await scrape(stack)
    assert value(found, "outpost_http_requests_total", method="POST", route=REPORT_ROUTE, status="200") == 2
    assert value(found, "outpost_http_requests_total", method="POST", route=STARTED_ROUTE, status="200") == 0


async def test_a_first_report_moves_the_build_to_running_and_renews_its_lease(stack: Stack) -> None:
    task = await claimed(stack)
    r = await job_call(stack, task, "POST", "/report", json={"started": PLAN, "logs": [], "steps": []})
    assert r.status_code == 200, r.text
    assert (await stack.build(task.build_id))["status"] == "running"
    # A lease of 2 s renewed by that report: a build that then goes silent is lost as a started one, not requeued.
    lost = await wait_for_status(stack, task.build_id, {"error", "queued"}, timeout=10)
    assert (lost["status"], lost["message"]) == ("error", "runner lost")


async def test_reports_that_carry_nothing_still_keep_the_lease_alive(stack: Stack) -> None:
    """A report is proof of life even when it is empty: the runner of a quiet step keeps its build (lease 2 s)."""
    task = await claimed(stack)
    assert (await job_call(stack, task, "POST", "/report", json={"started": PLAN})).status_code == 200
    for _ in range(8):  # 4 s: twice the lease's TTL
        await asyncio.sleep(0.5)
        empty = await job_call(stack, task, "POST", "/report", json={})
        assert empty.status_code == 200, empty.text
        assert empty.json() == {"sizes": {}}
    assert (await stack.build(task.build_id))["status"] == "running"
    lost = await wait_for_status(stack, task.build_id, {"error", "queued"}, timeout=10)
    assert (lost["status"], lost["message"]) == ("error", "runner lost")


async def test_a_build_cancelled_between_its_claim_and_its_first_report_ends_terminated(stack: Stack) -> None:
    task = await claimed(stack)
    await stack.api("POST", f"/builds/{task.build_id}/cancel")
    report = {
        "started": PLAN,
        "logs": [{"stream": "hello", "offset": 0, "data": b64(b"hi\n")}],
        "steps": [{"name": "hello", "update": {"status": "success"}}],
        "finish": {"status": "success"},
    }

    refused = await job_call(stack, task, "POST", "/report", json=report)

    assert refused.status_code == 409
    assert refused.json()["error"] == "lease_lost"
    build = await stack.build(task.build_id)
    assert (build["status"], build["message"]) == ("terminated", "cancelled before it started")
    assert build["steps"] == []  # nothing of the report was kept
    assert (await job_call(stack, task, "POST", "/heartbeat")).status_code == 409
    assert (await job_call(stack, task, "POST", "/report", json=report)).status_code == 409


async def test_a_first_report_through_a_superseded_lease_is_fenced_and_changes_nothing(stack: Stack) -> None:
    first, second = await claimed_twice(stack)

    stale = await job_call(stack, first, "POST", "/report", json={"started": PLAN, "finish": {"status": "success"}})

    assert stale.status_code == 409
    assert "superseded" in stale.json()["message"]
    now = await stack.build(second.build_id)
    assert (now["status"], now["steps"]) == ("claimed", [])
    assert (await job_call(stack, second, "POST", "/report", json={"started": PLAN})).status_code == 200


async def test_a_runner_of_the_previous_version_still_starts_its_build_with_its_own_call(stack: Stack) -> None:
    task = await claimed(stack)
    assert (await job_call(stack, task, "POST", "/started", json=PLAN)).status_code == 200
    assert (await stack.build(task.build_id))["status"] == "running"
    report = {
        "logs": [{"stream": "hello", "offset": 0, "data": b64(b"hi\n")}],
        "steps": [{"name": "hello", "update": {"status": "success", "exit_code": 0}}],
        "finish": {"status": "success"},
    }
    assert (await job_call(stack, task, "POST", "/report", json=report)).status_code == 200
    build = await stack.build(task.build_id)
    assert build["status"] == "success"
    assert [(s["name"], s["title"]) for s in build["steps"] if s["name"] == "hello"] == [("hello", "Say hi")]
    found = await scrape(stack)
    assert value(found, "outpost_http_requests_total", method="POST", route=STARTED_ROUTE, status="200") == 1
