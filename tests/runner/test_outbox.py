"""The outbox's sending against the real control plane app: reports in flight, lost answers, byte-complete logs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from outpost.runner.client import ProtocolClient
from outpost.runner.outbox import MAX_IN_FLIGHT, Outbox
from outpost.wire import (
    REPORTS_IN_FLIGHT_HEADER,
    BuildFinished,
    BuildStarted,
    RunBuildTask,
    StepUpdate,
)
from tests.server.test_protocol import claim
from tests.stack import BASE, Stack, running_stack, settings_for

ONE_STEP = "version: '1.0'\nsteps:\n  loud:\n    image: alpine\n    commands: [yes]\n"
CHUNK = 64 * 1024


class Watching(httpx.AsyncBaseTransport):
    """Counts the reports in flight at once; can lose requests on the way there or answers on the way back (a
    network that drops a connection), and hide the control plane's `Outpost-Reports-In-Flight`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.flying = 0
        self.most = 0
        self.reports = 0
        self.lose_request: set[int] = set()  # which reports (1, 2, ...) never reach the control plane
        self.lose_answer: set[int] = set()  # which reports are stored, but their answer is lost
        self.hide_window = False
        self.hide_max_bytes = False  # a 413 that does not say how much the control plane takes
        self.statuses: list[int] = []  # each report's answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/report"):
            return await self.inner.handle_async_request(request)
        self.reports += 1
        number = self.reports
        self.flying += 1
        self.most = max(self.most, self.flying)
        try:
            if number in self.lose_request:
                await asyncio.sleep(0.05)
                raise httpx.ConnectError("connection reset", request=request)
            response = await self.inner.handle_async_request(request)
            if number in self.lose_answer:
                raise httpx.ReadError("connection reset", request=request)
            if self.hide_window:
                del response.headers[REPORTS_IN_FLIGHT_HEADER]
            self.statuses.append(response.status_code)
            if response.status_code == 413 and self.hide_max_bytes:
                body = json.loads(await response.aread())
                del body["max_bytes"]
                return httpx.Response(413, json=body)
            return response
        finally:
            self.flying -= 1


@pytest.fixture
async def patient_stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A lease that outlives the test without heartbeats (none run here)."""
    async with running_stack(settings_for(database_url, tmp_path / "data", lease_ttl=60.0)) as s:
        yield s


async def claimed(stack: Stack) -> RunBuildTask:
    runner = await stack.register()
    await stack.pipeline("loud", ONE_STEP)
    await stack.run("loud")
    return await claim(stack, runner.runner_token)


def lines(count: int) -> bytes:
    return b"".join(b"line %06d of a loud step\n" % n for n in range(count))


async def follow(stack: Stack, build_id: str) -> tuple[dict[str, bytes], list[str]]:
    """What a log follower sees until the build ends, and the step of each piece in the order it saw them. Each
    piece must start where the step's log seen so far ends."""
    seen: dict[str, bytearray] = {}
    order: list[str] = []
    cursor = 0
    while True:
        page = (await stack.api("GET", f"/builds/{build_id}/log", params={"after": cursor, "wait": 5})).json()
        for piece in page["pieces"]:
            got = seen.setdefault(piece["step"], bytearray())
            assert piece["offset"] == len(got), f"{piece['step']}: a piece at {piece['offset']} after {len(got)} bytes"
            got += base64.b64decode(piece["data"])
            order.append(piece["step"])
        cursor = page["cursor"]
        if page["finished"]:
            return {step: bytes(data) for step, data in seen.items()}, order


async def deliver(
    stack: Stack, tmp_path: Path, watching: Watching, *logs: tuple[str, bytes], max_chunk: int = CHUNK
) -> tuple[dict[str, bytes], list[str]]:
    """Steps' logs, one after the other, each written in 16 KiB pieces and followed by the step's end, then the
    build's end, sent through `watching`; returns what a follower saw of the build (`follow`)."""
    task = await claimed(stack)
    box = Outbox.create(tmp_path / "box", task, ProtocolClient(BASE, transport=watching), max_chunk=max_chunk)
    await box.started(BuildStarted(steps=[]))
    follower = asyncio.create_task(follow(stack, task.build_id))
    pump = asyncio.create_task(box.pump())
    for step, log in logs:
        await box.step(step, StepUpdate(status="running"))
        for at in range(0, len(log), 16 * 1024):
            await box.log(step, log[at : at + 16 * 1024])
            if at % (256 * 1024) == 0:
                await asyncio.sleep(0)  # the engine reads a step's output a pipe buffer at a time
        await box.step(step, StepUpdate(status="success", exit_code=0))
    box.finish(BuildFinished(status="success"))
    box.close()
    await asyncio.wait_for(pump, 60)
    seen = await asyncio.wait_for(follower, 60)
    assert (await stack.build(task.build_id))["status"] == "success"
    for step, log in logs:
        stored = await stack.api("GET", f"/builds/{task.build_id}/steps/{step}/log")
        assert stored.content == log
    return seen


async def test_a_fast_log_goes_in_reports_in_flight_at_once_and_arrives_whole_in_order(
    patient_stack: Stack, tmp_path: Path
) -> None:
    watching = Watching(httpx.ASGITransport(app=patient_stack.app))
    log = lines(100_000)  # 2.6 MB: 40 chunks
    seen, _ = await deliver(patient_stack, tmp_path, watching, ("loud", log))
    assert seen["loud"] == log
    assert watching.most == MAX_IN_FLIGHT == 2


async def test_a_follower_sees_the_next_steps_log_only_after_all_of_the_one_before_it(
    patient_stack: Stack, tmp_path: Path
) -> None:
    """A report in flight beside another carries only bytes of the streams that one carries, so the control
    plane cannot store the next step's first bytes ahead of the last bytes of the step before it."""
    watching = Watching(httpx.ASGITransport(app=patient_stack.app))
    first, second, third = lines(60_000), lines(20_000), lines(60_000)
    seen, order = await deliver(patient_stack, tmp_path, watching, ("a", first), ("b", second), ("c", third))
    assert seen == {"a": first, "b": second, "c": third}
    assert order == sorted(order)  # every piece of a, then of b, then of c
    assert watching.most == 2


async def test_a_control_plane_that_does_not_take_reports_in_flight_gets_them_one_at_a_time(
    patient_stack: Stack, tmp_path: Path
) -> None:
    """As a control plane from before reports in flight (it answers without the header) would."""
    watching = Watching(httpx.ASGITransport(app=patient_stack.app))
    watching.hide_window = True
    log = lines(40_000)
    seen, _ = await deliver(patient_stack, tmp_path, watching, ("loud", log))
    assert seen["loud"] == log
    assert watching.most == 1


async def test_reports_lost_in_flight_or_whose_answers_are_lost_leave_no_hole_and_no_repeat(
    patient_stack: Stack, tmp_path: Path
) -> None:
    """A report that never arrives while the next is in flight (the next is refused with a gap, then both go
    again), and one stored whose answer is lost (sent again: nothing repeats)."""
    watching = Watching(httpx.ASGITransport(app=patient_stack.app))
    watching.lose_request = {3, 11}
    watching.lose_answer = {6, 7, 15}
    log = lines(100_000)
    seen, _ = await deliver(patient_stack, tmp_path, watching, ("loud", log))
    assert seen["loud"] == log
    assert watching.most == 2


@pytest.mark.parametrize("says_how_much", [True, False])
async def test_reports_larger_than_the_control_plane_now_takes_are_sent_again_smaller_not_dropped(
    patient_stack: Stack, tmp_path: Path, says_how_much: bool
) -> None:
    """The runner registered when the control plane took 1 MiB a report; it takes 64 KiB now (its
    OUTPOST_MAX_LOG_CHUNK was lowered and it restarted). The 413 says how much it takes, or (a proxy's 413) not:
    then the runner halves its reports until they pass. Either way every byte and the build's end arrive."""
    watching = Watching(httpx.ASGITransport(app=patient_stack.app))
    watching.hide_max_bytes = not says_how_much
    log = lines(40_000)  # 1 MB
    seen, _ = await deliver(patient_stack, tmp_path, watching, ("loud", log), max_chunk=16 * CHUNK)
    assert seen["loud"] == log
    refusals = watching.statuses.count(413)
    assert refusals == (1 if says_how_much else 4)  # 1 MiB, then 512, 256, 128 KiB refused; 64 KiB taken
    assert watching.statuses[refusals:].count(413) == 0
