"""The runner in-process against the real control plane app: burst mode, a flaky network, recovery."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from outpost.errors import OutpostError
from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient
from outpost.runner.outbox import Outbox
from outpost.wire import BuildFinished, BuildStarted, RunBuildTask, StepUpdate
from tests.server.test_protocol import claim as claim_with
from tests.stack import BASE, Stack, running_stack, settings_for

TWO_STEPS = """version: '1.0'
steps:
  first:
    image: alpine
    commands: ['for i in $(seq 1 50); do echo "first $i"; done']
  second:
    image: alpine
    commands: [echo second]
"""


class FlakyTransport(httpx.AsyncBaseTransport):
    """Fails every request while `down`; a network that comes and goes, not a patch of our code."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.failures = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.failures += 1
            raise httpx.ConnectError("network is down", request=request)
        return await self.inner.handle_async_request(request)


async def runner_for(stack: Stack, tmp_path: Path, transport: httpx.AsyncBaseTransport) -> Runner:
    identity = RunnerIdentity.registered(BASE, await stack.register())
    options = RunnerOptions(url=BASE, data_dir=tmp_path / "runner")
    return Runner(ProtocolClient(BASE, transport=transport), identity, options)


async def step_log(stack: Stack, build_id: str, step: str) -> bytes:
    return (await stack.api("GET", f"/builds/{build_id}/steps/{step}/log")).content


async def test_burst_mode_runs_what_is_queued_and_returns(stack: Stack, tmp_path: Path) -> None:
    await stack.pipeline("two", TWO_STEPS)
    builds = [(await stack.run("two"))["id"] for _ in range(2)]
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))

    await runner.run(burst=True)

    for build_id in builds:
        build = await stack.build(build_id)
        assert build["status"] == "success"
        assert await step_log(stack, build_id, "first") == "".join(f"first {i}\n" for i in range(1, 51)).encode()
        system = await step_log(stack, build_id, "$system")
        assert system.startswith(f"[outpost] runner {socket.gethostname()} ({runner.identity.runner_id})".encode())
    assert not list((tmp_path / "runner" / "builds").glob("*"))


async def claim(stack: Stack, runner: Runner) -> RunBuildTask:
    return await claim_with(stack, runner.identity.token)


@pytest.fixture
async def patient_stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A lease long enough to outlive the outage without heartbeats (none run in this test)."""
    async with running_stack(settings_for(database_url, tmp_path / "data", lease_ttl=60.0)) as s:
        yield s


async def test_reports_wait_in_the_outbox_while_the_network_is_down(patient_stack: Stack, tmp_path: Path) -> None:
    stack = patient_stack
    flaky = FlakyTransport(httpx.ASGITransport(app=stack.app))
    runner = await runner_for(stack, tmp_path, flaky)
    await stack.pipeline("two", TWO_STEPS)
    build_id = (await stack.run("two"))["id"]
    task = await claim(stack, runner)
    box = Outbox.create(tmp_path / "box", task, runner.client, max_chunk=16)
    await box.started(BuildStarted(steps=[]))
    flaky.down = True
    await box.log("first", b"line one\nline two\n")
    await box.step("first", StepUpdate(status="success", exit_code=0))
    await box.log("first", b"late but before the finish\n")
    box.finish(BuildFinished(status="success"))
    box.close()

    pump = asyncio.create_task(box.pump())
    await asyncio.sleep(1.0)
    assert not pump.done()
    assert flaky.failures > 0
    flaky.down = False
    await asyncio.wait_for(pump, 30)

    build = await stack.build(build_id)
    assert build["status"] == "success"
    assert await step_log(stack, build_id, "first") == b"line one\nline two\nlate but before the finish\n"


async def test_a_restarted_runner_delivers_what_the_crashed_one_left_and_ends_the_build(
    stack: Stack, tmp_path: Path
) -> None:
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    await stack.pipeline("two", TWO_STEPS)
    build_id = (await stack.run("two"))["id"]
    task = await claim(stack, runner)
    folder = tmp_path / "runner" / "builds" / build_id / "outbox"
    left = Outbox.create(folder, task, runner.client, max_chunk=1024, runner_token=runner.identity.token)
    await left.log("first", b"printed before the crash\n")
    await left.step("first", StepUpdate(status="running"))

    await runner.run(burst=True)

    build = await stack.build(build_id)
    assert build["status"] == "error"
    assert build["message"] == "the runner restarted while running this build"
    assert await step_log(stack, build_id, "first") == b"printed before the crash\n"
    assert not (tmp_path / "runner" / "builds" / build_id).exists()


def files(root: Path, needles: list[bytes]) -> list[Path]:
    """Every file under root that holds one of the needles: a grep of the whole tree, bytes."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in needles)
    ]


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    return [str(path) for path in files(root, needles)]


SECRET = "k3y-0f-the-deploy-r0b0t-7c1f9a2e"
SLEEPER = """version: '1.0'
steps:
  main:
    image: alpine
    commands:
      - echo "deploying with $API_KEY"
      - cf_export --mask COPY=$API_KEY
      - sleep 300 & echo $! > {pidfile}; wait
"""


async def test_a_revoked_runner_stops_its_build_keeps_nothing_of_it_and_stops(stack: Stack, tmp_path: Path) -> None:
    pidfile = tmp_path / "step.pid"
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    await stack.pipeline("deploy", SLEEPER.format(pidfile=pidfile), secrets={"API_KEY": SECRET})
    build_id = (await stack.run("deploy"))["id"]
    running = asyncio.create_task(runner.run())
    for _ in range(300):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.1)
    step_pid = int(pidfile.read_text())
    job_token = runner.jobs[build_id][0].task.job_token
    # While it runs, only cf_export's file in the build's volume holds the value (the step put it there).
    assert [p.name for p in files(runner.options.data_dir, [SECRET.encode()])] == ["env_vars_to_export"]
    assert files_holding(runner.options.data_dir, [job_token.encode(), b"opj_"]) == []

    await stack.api("DELETE", f"/runners/{runner.identity.runner_id}")

    with pytest.raises(OutpostError, match="refused this runner"):
        await asyncio.wait_for(running, 40)
    assert not Path(f"/proc/{step_pid}").exists() or "zombie" in Path(f"/proc/{step_pid}/status").read_text()
    assert not list((runner.options.data_dir / "builds").glob("*"))
    assert files_holding(runner.options.data_dir, [SECRET.encode(), job_token.encode()]) == []
    build = await stack.build(build_id)
    assert (build["status"], build["message"]) == ("error", "runner revoked")


async def test_a_restarted_runner_removes_what_a_crashed_one_left_that_could_hold_a_secret(
    stack: Stack, tmp_path: Path
) -> None:
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    data = runner.options.data_dir
    runner.options.executor_options = {"buildah_root": str(data / "buildah")}
    left = {
        data / "builds" / ("0" * 32) / "scratch" / "bin" / "cf_export": b"#!/bin/sh\n",  # a folder with no outbox
        data / "builds" / ("1" * 32) / "outbox" / "task.json": SECRET.encode(),  # an older runner's outbox, in clear
        data / "buildah" / "calls" / "tmpk1ll3d" / "auth.json": base64.b64encode(f"ci:{SECRET}".encode()),
        data / "volumes" / "default-deploy-3bc157d1a986" / "env_vars_to_export": f"COPY={SECRET}\n".encode(),
    }
    kept = data / "volumes" / "default-deploy-3bc157d1a986" / "checkout" / "README.md"
    for path, content in {**left, kept: b"a cached checkout\n"}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    await runner.run(burst=True)

    assert [path for path in left if path.exists()] == []
    assert not list((data / "builds").glob("*"))
    assert kept.read_bytes() == b"a cached checkout\n"


async def test_a_runner_error_that_quotes_a_secret_is_masked_in_the_builds_message(
    stack: Stack, tmp_path: Path
) -> None:
    # The step's working directory holds the secret and cannot be made: the error escapes the engine as a bug would.
    yaml = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    working_directory: /proc/${{API_KEY}}/x\n"
    yaml += "    commands: [echo never]\n"
    await stack.pipeline("odd", yaml, secrets={"API_KEY": SECRET})
    build_id = (await stack.run("odd"))["id"]
    runner = await runner_for(stack, tmp_path, httpx.ASGITransport(app=stack.app))

    await runner.run(burst=True)

    build = await stack.build(build_id)
    assert build["status"] == "error"
    assert build["message"].startswith("runner error: ")
    assert SECRET not in build["message"]
    assert "/proc/*****" in build["message"]


async def test_a_build_frozen_past_its_lease_deadline_is_stopped_when_no_renewal_comes_within_max_freeze(
    stack: Stack, tmp_path: Path
) -> None:
    pidfile = tmp_path / "step.pid"
    flaky = FlakyTransport(httpx.ASGITransport(app=stack.app))
    runner = await runner_for(stack, tmp_path, flaky)
    runner.options.max_freeze = 1.0
    await stack.pipeline("sleeper", SLEEPER.format(pidfile=pidfile))
    build_id = (await stack.run("sleeper"))["id"]
    running = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            while not (pidfile.exists() and pidfile.read_text().strip()):
                await asyncio.sleep(0.1)
        step = Path(f"/proc/{int(pidfile.read_text())}")
        flaky.down = True
        async with asyncio.timeout(10):  # frozen at the deadline (2 s), stopped a second later
            while step.exists() and "zombie" not in (step / "status").read_text():
                assert flaky.down
                await asyncio.sleep(0.1)
        flaky.down = False
        async with asyncio.timeout(30):
            while runner.jobs:
                await asyncio.sleep(0.1)
    finally:
        runner.stop()
        await asyncio.wait_for(running, 30)

    system = await step_log(stack, build_id, "$system")
    assert b"the steps are frozen until it answers (at most 1s)" in system
    assert b"the lease ran out: no renewal from the control plane for 2s, nor in the 1s its steps were frozen" in system
    assert (await stack.build(build_id))["status"] == "error"
