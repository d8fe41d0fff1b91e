"""The runner runs a build's first step without waiting for the control plane: `started` rides the first report
(docs/protocol.md), and what the control plane answers that report still decides whether the steps go on. The
runner in-process against the real control plane app, both databases."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from outpost.runner.agent import Runner
from outpost.runner.job import BuildJob
from outpost.runner.outbox import Outbox
from outpost.wire import BuildFinished, BuildStarted, RunBuildTask, StepPlan, StepUpdate
from tests.runner.test_runner import FlakyTransport, claim, runner_for, step_log
from tests.server.test_metrics import scrape, value
from tests.stack import Stack

ONE_STEP = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
SLEEPER = """version: '1.0'
steps:
  main:
    image: alpine
    commands:
      - sleep 300 & echo $! > {pidfile}; wait
  after:
    image: alpine
    commands: [echo never]
"""
ROUTE = "/api/runner/v1/builds/{build_id}/"


async def exchanges(stack: Stack, what: str) -> float:
    """Build-scoped `what` calls (report, started, heartbeat) the control plane answered 200."""
    return value(await scrape(stack), "outpost_http_requests_total", method="POST", route=ROUTE + what, status="200")


async def test_a_trivial_builds_start_steps_log_and_finish_go_in_one_report(stack: Stack, tmp_path: Path) -> None:
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    await stack.pipeline("one", ONE_STEP)
    build_id = (await stack.run("one"))["id"]
    task = await claim(stack, runner)
    box = Outbox.create(tmp_path / "box", task, runner.client, max_chunk=64 * 1024)
    await box.log("$system", b"[outpost] runner x\n")
    await box.started(BuildStarted(steps=[StepPlan(name="hello", title="Say hi")]))
    await box.step("hello", StepUpdate(status="running", started_at=time.time()))
    await box.log("hello", b"hi\n")
    await box.step("hello", StepUpdate(status="success", exit_code=0, finished_at=time.time()))
    box.finish(BuildFinished(status="success"))
    box.close()

    await asyncio.wait_for(box.pump(), 30)

    assert await exchanges(stack, "report") == 1
    assert await exchanges(stack, "started") == 0
    build = await stack.build(build_id)
    assert build["status"] == "success"
    assert [(s["name"], s["title"], s["status"]) for s in build["steps"] if s["name"] == "hello"] == [
        ("hello", "Say hi", "success")
    ]
    assert await step_log(stack, build_id, "hello") == b"hi\n"


async def test_a_runner_runs_its_builds_with_no_started_exchange(stack: Stack, tmp_path: Path) -> None:
    await stack.pipeline("one", ONE_STEP)
    builds = [(await stack.run("one"))["id"] for _ in range(3)]
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))

    await runner.run(burst=True)

    for build_id in builds:
        build = await stack.build(build_id)
        assert build["status"] == "success"
        assert build["started_at"] is not None
        assert [s["name"] for s in build["steps"] if s["name"] == "hello"] == ["hello"]
        assert await step_log(stack, build_id, "hello") == b"hi\n"
    assert await exchanges(stack, "started") == 0
    assert 3 <= await exchanges(stack, "report") <= 6  # one or two a build (the 10 ms linger may split one)


def new_job(task: RunBuildTask, runner: Runner, tmp_path: Path, polled: float) -> BuildJob:
    """The build as the runner's agent starts it, claimed by a poll sent at `polled` (monotonic)."""
    return BuildJob(
        task,
        runner.client,
        folder=tmp_path / "runner" / "builds" / task.build_id,
        executor="local",
        heartbeat_interval=0.5,
        max_chunk=64 * 1024,
        runner_token=runner.identity.token,
        leased_since=polled,
    )


async def sleeping_step(pidfile: Path) -> Path:
    async with asyncio.timeout(30):
        while not (pidfile.exists() and pidfile.read_text().strip()):
            await asyncio.sleep(0.05)
    return Path(f"/proc/{int(pidfile.read_text())}")


def gone(process: Path) -> bool:
    return not process.exists() or "zombie" in (process / "status").read_text()


async def test_a_build_cancelled_between_its_claim_and_its_first_report_stops_and_ends_terminated(
    stack: Stack, tmp_path: Path
) -> None:
    pidfile = tmp_path / "step.pid"
    flaky = FlakyTransport(httpx.ASGITransport(app=stack.app))
    runner = await runner_for(stack, tmp_path, flaky)
    await stack.pipeline("sleeper", SLEEPER.format(pidfile=pidfile))
    build_id = (await stack.run("sleeper"))["id"]
    polled = time.monotonic()
    task = await claim(stack, runner)
    job = new_job(task, runner, tmp_path, polled)
    flaky.down = True  # the first report waits: the step runs meanwhile, on the lease counted from the poll
    running = asyncio.create_task(job.run())
    step = await sleeping_step(pidfile)
    await stack.api("POST", f"/builds/{build_id}/cancel")

    flaky.down = False
    await asyncio.wait_for(running, 60)

    assert gone(step)
    build = await stack.build(build_id)
    assert (build["status"], build["message"]) == ("terminated", "cancelled before it started")
    assert not job.folder.exists()


async def test_a_first_report_refused_as_fenced_stops_the_steps(stack: Stack, tmp_path: Path) -> None:
    pidfile = tmp_path / "step.pid"
    flaky = FlakyTransport(httpx.ASGITransport(app=stack.app))
    runner = await runner_for(stack, tmp_path, flaky)
    other = await stack.register()
    await stack.pipeline("sleeper", SLEEPER.format(pidfile=pidfile))
    build_id = (await stack.run("sleeper"))["id"]
    task = await claim(stack, runner)
    async with asyncio.timeout(20):  # the lease (2 s) expires unrenewed: the build goes to another runner
        while (await stack.build(build_id))["status"] != "queued":
            await asyncio.sleep(0.1)
    async with stack.raw() as c:
        taken = await c.post(
            "/api/runner/v1/poll",
            json={"wait": 0, "free_slots": 1, "running": []},
            headers={"Authorization": f"Bearer {other.runner_token}"},
        )
    assert taken.json()["task"]["build_id"] == build_id
    # This runner only now hears of its claim (a slow answer): its steps run until the control plane says no.
    job = new_job(task, runner, tmp_path, time.monotonic())
    flaky.down = True
    running = asyncio.create_task(job.run())
    step = await sleeping_step(pidfile)

    flaky.down = False
    await asyncio.wait_for(running, 60)

    assert gone(step)
    build = await stack.build(build_id)
    assert (build["status"], build["runner_id"]) == ("claimed", other.runner_id)
    assert not job.folder.exists()


async def test_a_restarted_runner_delivers_a_start_the_crashed_one_never_sent(stack: Stack, tmp_path: Path) -> None:
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    await stack.pipeline("one", ONE_STEP)
    build_id = (await stack.run("one"))["id"]
    task = await claim(stack, runner)
    folder = tmp_path / "runner" / "builds" / build_id / "outbox"
    left = Outbox.create(folder, task, runner.client, max_chunk=1024, runner_token=runner.identity.token)
    await left.started(BuildStarted(steps=[StepPlan(name="hello", title="Say hi")]))
    await left.step("hello", StepUpdate(status="running"))
    await left.log("hello", b"printed before the crash\n")

    await runner.run(burst=True)

    build = await stack.build(build_id)
    assert (build["status"], build["message"]) == ("error", "the runner restarted while running this build")
    assert build["started_at"] is not None
    assert [(s["name"], s["title"]) for s in build["steps"] if s["name"] == "hello"] == [("hello", "Say hi")]
    assert await step_log(stack, build_id, "hello") == b"printed before the crash\n"


class BeatCrossesFinish(httpx.AsyncBaseTransport):
    """Holds the answer to the report that finishes the build until a heartbeat sent after that report was
    answered: a heartbeat crossing the final report, as a slow network makes it (not a patch of our code)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.holding = False
        self.crossed = asyncio.Event()
        self.refused_beats = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/heartbeat") and self.holding:
            self.refused_beats += response.status_code == 409
            self.crossed.set()
        elif request.url.path.endswith("/report") and b'"finish"' in request.content.split(b"\n", 1)[0]:
            self.holding = True
            await asyncio.wait_for(self.crossed.wait(), 30)
        return response


async def test_a_heartbeat_refused_after_the_final_report_was_taken_does_not_abandon_the_build(
    stack: Stack, tmp_path: Path
) -> None:
    crossing = BeatCrossesFinish(httpx.ASGITransport(app=stack.app))
    runner = await runner_for(stack, tmp_path, crossing)
    await stack.pipeline("one", ONE_STEP)
    build_id = (await stack.run("one"))["id"]
    polled = time.monotonic()
    task = await claim(stack, runner)
    job = new_job(task, runner, tmp_path, polled)
    job.heartbeat_interval = 0.05

    await asyncio.wait_for(job.run(), 60)

    assert crossing.refused_beats >= 1  # the build's lease had ended with it
    assert job.delivered.is_set()
    assert (await stack.build(build_id))["status"] == "success"
    assert await step_log(stack, build_id, "hello") == b"hi\n"


class PreviousControlPlane(httpx.AsyncBaseTransport):
    """Answers a report that carries `started` as a control plane of the previous version does (422: a field it does
    not know), and passes everything else to the real app: a network in front of an older server, not a patch."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report") and b'"started"' in request.content.split(b"\n", 1)[0]:
            self.refused += 1
            problem = {"type": "extra_forbidden", "loc": ["body", "started"], "msg": "Extra inputs are not permitted"}
            return httpx.Response(422, json={"error": "invalid_request", "problems": [problem]}, request=request)
        return await self.inner.handle_async_request(request)


async def test_a_runner_sends_started_on_its_own_to_a_control_plane_that_refuses_it_in_a_report(
    stack: Stack, tmp_path: Path
) -> None:
    older = PreviousControlPlane(httpx.ASGITransport(app=stack.app))
    await stack.pipeline("one", ONE_STEP)
    builds = [(await stack.run("one"))["id"] for _ in range(2)]
    runner = await runner_for(stack, tmp_path, older)

    await runner.run(burst=True)

    assert older.refused == 1  # once: from then on `started` goes through POST /started
    assert await exchanges(stack, "started") == 2
    for build_id in builds:
        build = await stack.build(build_id)
        assert build["status"] == "success"
        assert [s["name"] for s in build["steps"] if s["name"] == "hello"] == ["hello"]
        assert await step_log(stack, build_id, "hello") == b"hi\n"
