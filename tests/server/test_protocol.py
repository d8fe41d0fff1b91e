"""Runner protocol v1 from the runner's side of the wire, against the real app and database."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest

from outpost.errors import Unauthorized
from outpost.server.api.logs import MAX_PAGE_BYTES, STREAM_PAGE_BYTES
from outpost.server.models import Build, Runner
from outpost.server.store import builds, logs
from outpost.wire import LEASE_HEADER, PREFIX, REPORT_CONTENT_TYPE, PollRequest, RegisterRequest, RunBuildTask
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


async def poll(stack: Stack, runner_token: str, **body: Any) -> httpx.Response:
    request = PollRequest(**{"wait": 0.0, **body})
    async with stack.raw() as c:
        return await c.post(
            PREFIX + "/poll", json=request.model_dump(), headers={"Authorization": f"Bearer {runner_token}"}
        )


async def claim(stack: Stack, runner_token: str) -> RunBuildTask:
    r = await poll(stack, runner_token)
    assert r.status_code == 200, r.text
    task = r.json()["task"]
    assert task["kind"] == "run_build"
    return RunBuildTask.model_validate(task)


async def claimed(stack: Stack) -> RunBuildTask:
    """A build of a one-step pipeline, claimed by a newly registered runner."""
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    await stack.run("hello")
    return await claim(stack, runner.runner_token)


async def job_call(
    stack: Stack, task: RunBuildTask, method: str, path: str, *, lease: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {task.job_token}", LEASE_HEADER: lease or task.lease_id}
    headers.update(kwargs.pop("headers", {}))
    async with stack.raw() as c:
        return await c.request(method, f"{PREFIX}/builds/{task.build_id}{path}", headers=headers, **kwargs)


async def log_text(stack: Stack, build_id: str, step: str) -> bytes:
    r = await stack.api("GET", f"/builds/{build_id}/steps/{step}/log")
    assert r.status_code == 200, r.text
    return r.content


async def test_an_install_token_registers_exactly_one_runner(stack: Stack) -> None:
    install = await stack.install_token()
    body = RegisterRequest(install_token=install, name="r1").model_dump()
    async with stack.raw() as c:
        first = await c.post(PREFIX + "/register", json=body)
        second = await c.post(PREFIX + "/register", json=body)
    assert first.status_code == 201
    assert first.json()["runner_token"].startswith("opr_")
    assert second.status_code == 401


async def test_a_poll_with_nothing_queued_answers_204(stack: Stack) -> None:
    runner = await stack.register()
    r = await poll(stack, runner.runner_token, wait=0.2)
    assert r.status_code == 204


async def test_a_runner_is_handed_only_builds_of_its_own_runtime(stack: Stack) -> None:
    """A compromised runner gets the secrets of the builds it is handed: never those of another runtime or account."""
    runner = await stack.register()  # of the default account's "local" runtime
    assert (await stack.api("POST", "/runtimes", json={"name": "corp-k8s"})).status_code == 201
    await stack.pipeline("elsewhere", HELLO, runtime="corp-k8s", secrets={"TOKEN": "s3cret-of-corp"})
    other = await stack.api("POST", "/accounts", json={"name": "acme"})
    acme = other.json()["token"]
    assert (await stack.api("POST", "/runtimes", token=acme, json={"name": "local"})).status_code == 201
    await stack.pipeline("acme-app", HELLO, token=acme, secrets={"TOKEN": "s3cret-of-acme"})
    queued = [await stack.run("elsewhere"), await stack.run("acme-app", token=acme)]

    r = await poll(stack, runner.runner_token, wait=0.2)
    assert r.status_code == 204, r.text
    assert [
        (await stack.build(queued[0]["id"]))["status"],
        (await stack.build(queued[1]["id"], token=acme))["status"],
    ] == [
        "queued",
        "queued",
    ]

    await stack.pipeline("mine", HELLO)
    mine = await stack.run("mine")
    assert (await claim(stack, runner.runner_token)).build_id == mine["id"]


async def test_a_waiting_poll_is_woken_by_a_new_build(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    waiting = asyncio.create_task(poll(stack, runner.runner_token, wait=30))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    build = await stack.run("hello")
    r = await asyncio.wait_for(waiting, 10)
    task = r.json()["task"]
    assert task["build_id"] == build["id"]
    assert task["yaml"] == HELLO
    assert task["job_token"].startswith("opj_")


async def test_each_build_is_claimed_by_exactly_one_runner(stack: Stack) -> None:
    runners = [await stack.register() for _ in range(6)]
    await stack.pipeline("hello", HELLO)
    builds = {(await stack.run("hello"))["id"] for _ in range(4)}
    answers = await asyncio.gather(*(poll(stack, r.runner_token, wait=1.0) for r in runners))
    claimed = [a.json()["task"]["build_id"] for a in answers if a.status_code == 200]
    assert sorted(claimed) == sorted(builds)


async def test_a_runner_with_no_free_slot_gets_no_build(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    await stack.run("hello")
    r = await poll(stack, runner.runner_token, free_slots=0, wait=0.1)
    assert r.status_code == 204


async def test_log_appends_are_idempotent_and_gaps_are_refused(stack: Stack) -> None:
    task = await claimed(stack)

    first = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"line 1\n")
    assert first.json() == {"size": 7}
    resend = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"line 1\n")
    assert resend.json() == {"size": 7}
    overlap = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 5}, content=b"1\nline 2\n")
    assert overlap.json() == {"size": 14}
    gap = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 20}, content=b"lost\n")
    assert gap.status_code == 416
    assert gap.json()["expected_offset"] == 14
    assert await log_text(stack, task.build_id, "hello") == b"line 1\nline 2\n"


async def test_a_step_log_larger_than_a_stream_page_reads_back_byte_for_byte(stack: Stack) -> None:
    """The whole-log route streams page by page: every chunk arrives once, in order, whatever the size."""
    task = await claimed(stack)
    limit = stack.services.settings.max_log_chunk
    sent = bytearray()
    for n in range(STREAM_PAGE_BYTES // limit * 2 + 3):  # over two pages, ending inside a third
        data = (b"%08d " % n) * (limit // 9) + b"\n"
        # Reports, as the runner sends them: each renews the lease (the test stack's is 2 s), PUTs do not.
        head = {"logs": [{"stream": "hello", "offset": len(sent), "size": len(data)}]}
        r = await job_call(stack, task, "POST", "/report", **raw(head, data))
        assert r.status_code == 200, r.text
        sent += data
    got = await log_text(stack, task.build_id, "hello")
    assert len(got) == len(sent)
    assert got == bytes(sent)


async def test_an_oversized_log_chunk_gets_413_and_stores_nothing(stack: Stack) -> None:
    task = await claimed(stack)
    limit = stack.services.settings.max_log_chunk
    r = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"x" * (limit + 1))
    assert r.status_code == 413
    ok = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"fits\n")
    assert ok.json() == {"size": 5}


async def test_build_scoped_calls_need_the_job_token_of_that_lease(stack: Stack) -> None:
    task = await claimed(stack)
    forged = task.model_copy(update={"job_token": "opj_forged"})
    r = await job_call(stack, forged, "POST", "/heartbeat")
    assert r.status_code == 401
    r = await job_call(stack, task, "POST", "/heartbeat", lease="0" * 32)
    assert r.status_code == 401


async def test_step_states_never_go_backwards_and_the_first_final_state_wins(stack: Stack) -> None:
    task = await claimed(stack)
    started = {"steps": [{"name": "hello", "type": "freestyle"}]}
    assert (await job_call(stack, task, "POST", "/started", json=started)).status_code == 200
    assert (await job_call(stack, task, "POST", "/started", json=started)).status_code == 200
    for status in ("running", "success", "running", "failure"):
        r = await job_call(stack, task, "POST", "/steps/hello", json={"status": status})
        assert r.status_code == 200
    build = await stack.build(task.build_id)
    assert [(s["name"], s["status"]) for s in build["steps"]] == [("hello", "success")]


async def test_finish_is_idempotent_and_ends_the_lease(stack: Stack) -> None:
    task = await claimed(stack)
    await job_call(stack, task, "POST", "/started", json={"steps": []})
    for _ in range(2):
        r = await job_call(stack, task, "POST", "/finish", json={"status": "success"})
        assert r.status_code == 200
    assert (await stack.build(task.build_id))["status"] == "success"
    late = await job_call(stack, task, "POST", "/heartbeat")
    assert late.status_code == 409
    assert late.json()["error"] == "lease_lost"


async def test_a_started_build_whose_lease_expires_ends_as_runner_lost(stack: Stack) -> None:
    task = await claimed(stack)
    await job_call(stack, task, "POST", "/started", json={"steps": [{"name": "hello"}]})
    await job_call(stack, task, "POST", "/steps/hello", json={"status": "running"})
    build = await wait_for_status(stack, task.build_id, {"error"}, timeout=10)
    assert build["message"] == "runner lost"
    assert build["steps"][0]["status"] == "error"
    stale = await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"late\n")
    assert stale.status_code == 409
    assert (await job_call(stack, task, "POST", "/finish", json={"status": "success"})).status_code == 409
    assert (await stack.build(task.build_id))["status"] == "error"


async def claimed_twice(stack: Stack) -> tuple[RunBuildTask, RunBuildTask]:
    """A build claimed by one runner that never started it, back in the queue once the lease expired, and
    claimed by another: the first lease and the second."""
    lost, other = await stack.register(), await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    first = await claim(stack, lost.runner_token)
    await wait_for_status(stack, build["id"], {"queued"}, timeout=10)
    return first, await claim(stack, other.runner_token)


async def test_a_build_that_never_started_goes_back_to_the_queue(stack: Stack) -> None:
    first, second = await claimed_twice(stack)
    assert second.build_id == first.build_id
    assert second.lease_id != first.lease_id
    superseded = await job_call(stack, first, "POST", "/started", json={"steps": []})
    assert superseded.status_code == 409
    heartbeat = await job_call(stack, second, "POST", "/heartbeat")
    assert heartbeat.status_code == 200


async def test_the_old_lease_of_a_reclaimed_build_is_fenced_with_409(stack: Stack) -> None:
    lost, other = await stack.register(), await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    first = await claim(stack, lost.runner_token)
    await wait_for_status(stack, build["id"], {"queued"}, timeout=10)
    await claim(stack, other.runner_token)
    r = await job_call(stack, first, "POST", "/heartbeat")
    assert r.status_code == 409
    assert "superseded" in r.json()["message"]


async def test_cancel_reaches_the_runner_through_poll_and_heartbeat(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json={"steps": []})
    waiting = asyncio.create_task(poll(stack, runner.runner_token, free_slots=0, running=[task.build_id], wait=30))
    await asyncio.sleep(0.2)
    await stack.api("POST", f"/builds/{build['id']}/cancel")
    answer = await asyncio.wait_for(waiting, 10)
    assert answer.json()["task"] == {"kind": "cancel_build", "build_id": build["id"], "reason": "cancel requested"}
    beat = await job_call(stack, task, "POST", "/heartbeat")
    assert beat.json()["cancel_requested"] is True


async def test_a_revoked_runner_is_refused(stack: Stack) -> None:
    runner = await stack.register()
    assert (await stack.api("DELETE", f"/runners/{runner.runner_id}")).status_code == 200
    r = await poll(stack, runner.runner_token)
    assert r.status_code == 401


async def test_revoking_a_runner_ends_its_running_build_and_voids_its_job_token(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("hello", HELLO)
    await stack.run("hello")
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json={"steps": [{"name": "hello"}, {"name": "after"}]})
    await job_call(stack, task, "POST", "/steps/hello", json={"status": "running"})
    await job_call(stack, task, "PUT", "/steps/hello/log", params={"offset": 0}, content=b"before\n")

    revoked = await stack.api("DELETE", f"/runners/{runner.runner_id}")

    assert revoked.json()["builds"] == [task.build_id]
    build = await stack.build(task.build_id)
    assert (build["status"], build["message"]) == ("error", "runner revoked")
    assert [(s["name"], s["status"]) for s in build["steps"]] == [("hello", "error"), ("after", "skipped")]
    report = {"logs": [], "steps": [], "finish": {"status": "success"}}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/heartbeat", {}),
        ("POST", "/started", {"json": {"steps": []}}),
        ("PUT", "/steps/hello/log", {"params": {"offset": 7}, "content": b"after\n"}),
        ("POST", "/steps/hello", {"json": {"status": "success"}}),
        ("POST", "/report", {"json": report}),
        ("POST", "/finish", {"json": {"status": "success"}}),
    ]
    for method, path, kwargs in calls:
        answer = await job_call(stack, task, method, path, **kwargs)
        assert answer.status_code == 401, (path, answer.text)  # not 409: the runner must stop, not retry around
    build = await stack.build(task.build_id)
    assert (build["status"], build["message"]) == ("error", "runner revoked")
    assert await log_text(stack, task.build_id, "hello") == b"before\n"


async def test_a_build_a_revoked_runner_never_started_goes_to_another_runner(stack: Stack) -> None:
    revoked, other = await stack.register(), await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    first = await claim(stack, revoked.runner_token)

    await stack.api("DELETE", f"/runners/{revoked.runner_id}")

    assert (await stack.build(build["id"]))["status"] == "queued"
    second = await claim(stack, other.runner_token)
    assert second.build_id == build["id"]
    assert (await job_call(stack, first, "POST", "/started", json={"steps": []})).status_code == 401
    assert (await job_call(stack, second, "POST", "/started", json={"steps": []})).status_code == 200


async def test_a_claim_racing_a_revocation_hands_the_revoked_runner_nothing(stack: Stack) -> None:
    registered = await stack.register()
    await stack.pipeline("hello", HELLO)
    build = await stack.run("hello")
    svc = stack.services

    async def claim_in_its_own_transaction() -> object:
        async with svc.tx() as session:
            runner = await session.get_one(Runner, registered.runner_id)  # read before the revocation commits
            return await builds.claim_next(session, runner, 30.0)

    async with svc.tx() as session:  # a revocation, committed only when this block ends
        revoked = await session.get_one(Runner, registered.runner_id)
        revoked.revoked_at = time.time()
        await session.flush()
        claiming = asyncio.create_task(claim_in_its_own_transaction())
        await asyncio.sleep(0.5)  # the claim has started meanwhile
    with pytest.raises(Unauthorized):
        await asyncio.wait_for(claiming, 30)
    assert (await stack.build(build["id"]))["status"] == "queued"


async def wait_for_status(stack: Stack, build_id: str, statuses: set[str], *, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        build = await stack.build(build_id)
        if build["status"] in statuses:
            return build
        assert loop.time() < deadline, f"build stayed {build['status']}, expected {statuses}"
        await asyncio.sleep(0.1)


async def test_the_task_carries_the_decrypted_secrets_to_the_runner(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("deploy", HELLO, secrets={"API_KEY": "s3cr3t-value"})
    await stack.run("deploy")
    task = await claim(stack, runner.runner_token)
    assert task.secrets == {"API_KEY": "s3cr3t-value"}
    assert "API_KEY" not in task.variables


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


async def test_a_report_applies_logs_then_steps_then_the_finish_together(stack: Stack) -> None:
    task = await claimed(stack)
    report = {
        "logs": [
            {"stream": "hello", "offset": 0, "data": b64(b"hi\n")},
            {"stream": "$system", "offset": 0, "data": b64(b"[outpost] note\n")},
        ],
        "steps": [{"name": "hello", "update": {"status": "success", "exit_code": 0}}],
        "finish": {"status": "success"},
    }
    first = await job_call(stack, task, "POST", "/report", json=report)
    assert first.status_code == 200, first.text
    assert first.json() == {"sizes": {"hello": 3, "$system": 15}}
    resent = await job_call(stack, task, "POST", "/report", json=report)
    assert resent.status_code == 200
    assert resent.json() == {"sizes": {"hello": 3, "$system": 15}}
    build = await stack.build(task.build_id)
    assert build["status"] == "success"
    assert await log_text(stack, task.build_id, "hello") == b"hi\n"


async def test_a_report_with_a_gap_changes_nothing_and_names_the_stream(stack: Stack) -> None:
    task = await claimed(stack)
    report = {
        "logs": [
            {"stream": "hello", "offset": 0, "data": b64(b"fine\n")},
            {"stream": "other", "offset": 9, "data": b64(b"gap\n")},
        ],
        "steps": [{"name": "hello", "update": {"status": "running"}}],
    }
    r = await job_call(stack, task, "POST", "/report", json=report)
    assert r.status_code == 416
    assert r.json()["stream"] == "other"
    assert r.json()["expected_offset"] == 0
    build = await stack.build(task.build_id)
    assert build["steps"] == []


def raw(head: dict[str, Any], *tail: bytes) -> dict[str, Any]:
    """Keyword arguments for `job_call` that send a raw report: the JSON head, a newline, the log bytes."""
    content = json.dumps(head).encode() + b"\n" + b"".join(tail)
    return {"content": content, "headers": {"Content-Type": REPORT_CONTENT_TYPE}}


async def test_a_raw_report_stores_log_bytes_exactly_as_sent(stack: Stack) -> None:
    """Log bytes travel raw after a JSON head: newlines, NUL and bytes that are not UTF-8 come back unchanged."""
    task = await claimed(stack)
    odd = b'line\n\x00\xff\xfe not utf-8 \r\n{"json": 1}\n'
    head = {
        "logs": [{"stream": "hello", "offset": 0, "size": len(odd)}, {"stream": "$system", "offset": 0, "size": 4}],
        "steps": [{"name": "hello", "update": {"status": "success", "exit_code": 0}}],
        "finish": {"status": "success"},
    }
    first = await job_call(stack, task, "POST", "/report", **raw(head, odd, b"sys\n"))
    assert first.status_code == 200, first.text
    assert first.json() == {"sizes": {"hello": len(odd), "$system": 4}}
    resent = await job_call(stack, task, "POST", "/report", **raw(head, odd, b"sys\n"))
    assert resent.json() == {"sizes": {"hello": len(odd), "$system": 4}}
    assert (await stack.build(task.build_id))["status"] == "success"
    assert await log_text(stack, task.build_id, "hello") == odd


async def test_a_raw_report_whose_bytes_do_not_match_its_head_changes_nothing(stack: Stack) -> None:
    task = await claimed(stack)
    head = {
        "logs": [{"stream": "hello", "offset": 0, "size": 10}],
        "steps": [{"name": "hello", "update": {"status": "running"}}],
    }
    short = await job_call(stack, task, "POST", "/report", **raw(head, b"only 7\n"))
    assert short.status_code == 422
    assert "announces 10 log bytes; 7 follow" in short.json()["message"]
    headless = await job_call(
        stack, task, "POST", "/report", content=b"no newline", headers={"Content-Type": REPORT_CONTENT_TYPE}
    )
    assert headless.status_code == 422
    unknown = await job_call(stack, task, "POST", "/report", **raw({"logs": [], "surprise": 1}))
    assert unknown.status_code == 422
    assert "surprise" in unknown.json()["message"]
    assert (await stack.build(task.build_id))["steps"] == []


async def test_a_raw_report_head_is_held_to_the_json_rules_of_every_body(stack: Stack) -> None:
    """The NUL guard lets raw bodies through (log bytes may hold NUL), so the route checks the head itself."""
    task = await claimed(stack)
    nul = {"steps": [{"name": "hello", "update": {"status": "failure", "message": "a\u0000b"}}]}
    refused = await job_call(stack, task, "POST", "/report", **raw(nul))
    assert refused.status_code == 422
    assert "NUL" in refused.json()["message"]
    deep = b'{"logs": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    nested = await job_call(stack, task, "POST", "/report", content=deep, headers={"Content-Type": REPORT_CONTENT_TYPE})
    assert nested.status_code == 400
    assert (await stack.build(task.build_id))["steps"] == []


async def test_a_report_refuses_bad_data_and_too_many_bytes(stack: Stack) -> None:
    task = await claimed(stack)
    bad = await job_call(stack, task, "POST", "/report", json={"logs": [{"stream": "a", "offset": 0, "data": "%%"}]})
    assert bad.status_code == 422
    limit = stack.services.settings.max_log_chunk
    big = {"logs": [{"stream": "a", "offset": 0, "data": b64(b"x" * (limit + 1))}]}
    assert (await job_call(stack, task, "POST", "/report", json=big)).status_code == 413


class SlowBody:
    """A request body that stops after its first part until `release` is set: a report still arriving."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self.release = asyncio.Event()
        # With its length declared, as the runner sends it (a body of unknown length is read whole before the route).
        self.headers = {"Content-Type": REPORT_CONTENT_TYPE, "Content-Length": str(len(first) + len(rest))}

    async def __aiter__(self) -> Any:
        yield self.first
        await self.release.wait()
        yield self.rest


async def arrived(stack: Stack, build_id: str, count: int) -> None:
    """Until the control plane holds `count` reports of the build (they have begun to arrive)."""
    for _ in range(500):
        if stack.services.arrivals.in_hand(build_id) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} reports of {build_id} never arrived")


async def test_a_report_that_overtakes_the_one_before_it_waits_for_it_and_both_are_stored(stack: Stack) -> None:
    """Two reports in flight: the second, whose bytes start where the first's end, is handled while the first is
    still arriving. It waits for the first rather than answer 416, and the log holds both, in order, once."""
    task = await claimed(stack)
    first, second = b"first report\n" * 1000, b"second report\n" * 1000
    head = json.dumps({"logs": [{"stream": "hello", "offset": 0, "size": len(first)}]}).encode() + b"\n"
    slow = SlowBody(head + first[:100], first[100:])
    earlier = asyncio.create_task(job_call(stack, task, "POST", "/report", content=slow, headers=slow.headers))
    await arrived(stack, task.build_id, 1)
    later = asyncio.create_task(
        job_call(
            stack,
            task,
            "POST",
            "/report",
            **raw({"logs": [{"stream": "hello", "offset": len(first), "size": len(second)}]}, second),
        )
    )
    await arrived(stack, task.build_id, 2)
    await asyncio.sleep(0.3)
    assert not later.done()  # waiting for the first, not refused
    slow.release.set()
    answers = await asyncio.wait_for(asyncio.gather(earlier, later), 30)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[1].json() == {"sizes": {"hello": len(first) + len(second)}}
    assert answers[1].headers["Outpost-Reports-In-Flight"] == "2"
    assert await log_text(stack, task.build_id, "hello") == first + second


async def test_a_gap_the_report_before_it_does_not_fill_is_refused_once_that_one_is_done(stack: Stack) -> None:
    task = await claimed(stack)
    head = json.dumps({"logs": [{"stream": "hello", "offset": 0, "size": 10}]}).encode() + b"\n"
    slow = SlowBody(head + b"0123", b"45678\n")
    earlier = asyncio.create_task(job_call(stack, task, "POST", "/report", content=slow, headers=slow.headers))
    await arrived(stack, task.build_id, 1)
    beyond = asyncio.create_task(
        job_call(
            stack, task, "POST", "/report", **raw({"logs": [{"stream": "hello", "offset": 20, "size": 5}]}, b"lost\n")
        )
    )
    await arrived(stack, task.build_id, 2)
    slow.release.set()
    stored, refused = await asyncio.wait_for(asyncio.gather(earlier, beyond), 30)
    assert stored.status_code == 200, stored.text
    assert refused.status_code == 416
    assert refused.json()["expected_offset"] == 10
    assert await log_text(stack, task.build_id, "hello") == b"012345678\n"


async def test_a_follower_of_a_short_build_gets_its_whole_log_and_the_end_in_one_answer(stack: Stack) -> None:
    """The page that holds the last of a finished build's log says `finished`: no further request is needed."""
    task = await claimed(stack)
    follow = asyncio.create_task(stack.api("GET", f"/builds/{task.build_id}/log", params={"after": 0, "wait": 20}))
    head = {
        "logs": [{"stream": "hello", "offset": 0, "size": 3}],
        "steps": [{"name": "hello", "update": {"status": "success", "exit_code": 0}}],
        "finish": {"status": "success"},
    }
    r = await job_call(stack, task, "POST", "/report", **raw(head, b"hi\n"))
    assert r.status_code == 200, r.text
    page = (await asyncio.wait_for(follow, 30)).json()
    assert [base64.b64decode(p["data"]) for p in page["pieces"]] == [b"hi\n"]
    assert page["finished"] is True
    assert page["status"] == "success"
    again = (await stack.api("GET", f"/builds/{task.build_id}/log", params={"after": page["cursor"]})).json()
    assert again["pieces"] == []
    assert again["finished"] is True


async def test_a_page_says_the_status_its_chunks_were_stored_with(stack: Stack) -> None:
    """A follower's look reads the build, then its chunks. A finishing report committed between the two (on
    PostgreSQL, through another connection) must not give a page of the finish's chunks with the status of
    before: `finished` would be missing, and the follower would ask once more for nothing."""
    task = await claimed(stack)
    async with stack.services.tx() as session:
        before = await session.get_one(Build, task.build_id)  # as the look's first read saw it
    head = {
        "logs": [{"stream": "hello", "offset": 0, "size": 3}],
        "steps": [{"name": "hello", "update": {"status": "success", "exit_code": 0}}],
        "finish": {"status": "success"},
    }
    r = await job_call(stack, task, "POST", "/report", **raw(head, b"hi\n"))
    assert r.status_code == 200, r.text
    async with stack.services.tx() as session:
        pieces, rest, status = await logs.read_page(session, before, 0, MAX_PAGE_BYTES)
    assert before.status == "claimed"
    assert ([p.data for p in pieces], rest, status) == ([b"hi\n"], False, "success")


async def test_a_page_cut_short_by_its_size_is_not_the_end_even_of_a_finished_build(stack: Stack) -> None:
    task = await claimed(stack)
    limit = stack.services.settings.max_log_chunk
    sent = bytearray()
    for n in range(MAX_PAGE_BYTES // limit + 2):  # more than a page
        data = (b"%06d " % n) * (limit // 7)
        head: dict[str, Any] = {"logs": [{"stream": "hello", "offset": len(sent), "size": len(data)}]}
        if n == MAX_PAGE_BYTES // limit + 1:
            head["finish"] = {"status": "success"}
        r = await job_call(stack, task, "POST", "/report", **raw(head, data))
        assert r.status_code == 200, r.text
        sent += data
    got, cursor, finished = bytearray(), 0, []
    while not (finished and finished[-1]):
        page = (await stack.api("GET", f"/builds/{task.build_id}/log", params={"after": cursor})).json()
        got += b"".join(base64.b64decode(p["data"]) for p in page["pieces"])
        cursor = page["cursor"]
        finished.append(page["finished"])
        assert len(finished) <= 5
    assert bytes(got) == bytes(sent)
    assert finished == [False, True]  # the first page stops short of the log's end; the second holds the rest


async def test_a_follower_far_behind_reads_the_log_a_page_at_a_time_every_byte_once(stack: Stack) -> None:
    task = await claimed(stack)
    limit = stack.services.settings.max_log_chunk
    sent = bytearray()
    for n in range(MAX_PAGE_BYTES // limit + 4):  # a page and four chunks more
        data = (b"%06d " % n) * (limit // 7)
        r = await job_call(
            stack,
            task,
            "POST",
            "/report",
            **raw({"logs": [{"stream": "hello", "offset": len(sent), "size": len(data)}]}, data),
        )
        assert r.status_code == 200, r.text
        sent += data
    got, cursor, pages = bytearray(), 0, []
    while len(got) < len(sent):
        page = (await stack.api("GET", f"/builds/{task.build_id}/log", params={"after": cursor})).json()
        pages.append(0)
        for piece in page["pieces"]:
            assert piece["offset"] == len(got)
            data = base64.b64decode(piece["data"])
            got += data
            pages[-1] += len(data)
        cursor = page["cursor"]
    assert bytes(got) == bytes(sent)
    assert len(pages) == 2
    assert max(pages) <= MAX_PAGE_BYTES
