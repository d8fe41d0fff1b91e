"""The executor contract (executors/base.py), held by every executor: output merged and complete as it comes,
the exit code, the environment as given, and cancellation that ends the step before it returns."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from outpost.executors import executor_class
from outpost.executors.base import Executor, StepJob
from tests import containers
from tests.components import sleeping
from tests.kube import fixtures

dockerd, busybox_image = containers.dockerd, containers.busybox_image
kube_cluster = fixtures.kube_cluster

pytestmark = pytest.mark.timeout(120)


@dataclass
class Subject:
    executor: Executor
    image: str | None
    engine: containers.Dockerd | None = None

    def job(self, script: str, env: dict[str, str] | None = None) -> StepJob:
        return StepJob(
            step="contract",
            script=script,
            env={"PATH": os.defpath, **(env or {})},
            workdir=self.executor.volume,
            image=self.image,
            host_env=frozenset({"PATH"}),
        )

    async def run(self, job: StepJob) -> tuple[int, bytes]:
        out = bytearray()

        async def sink(chunk: bytes) -> None:
            out.extend(chunk)

        return await self.executor.run(job, sink), bytes(out)


@pytest.fixture(params=["local", "docker", "kubernetes"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    build_id = f"c{uuid.uuid4().hex[:8]}"
    volume, scratch = tmp_path / "volume", tmp_path / "scratch"
    options: dict[str, str] = {}
    image, engine = None, None
    if request.param == "docker":
        engine = request.getfixturevalue("dockerd")
        image = request.getfixturevalue("busybox_image")
        options = {"docker_host": engine.host}
    if request.param == "kubernetes":
        cluster = request.getfixturevalue("kube_cluster")
        image = request.getfixturevalue("busybox_image")
        root = cluster.claim_folder()  # the runner's data folder lives in the work claim
        volume, scratch = root / "builds" / build_id / "volume", root / "builds" / build_id / "scratch"
        options = cluster.executor_options()
    volume.mkdir(parents=True)
    cls = executor_class(request.param)
    async with cls(volume, scratch, build_id=build_id, options=options) as executor:
        yield Subject(executor, image, engine)


async def test_output_arrives_merged_complete_and_in_order_per_stream(subject: Subject) -> None:
    script = "for i in $(seq 1 3000); do echo out $i; echo err $i >&2; done\n"
    code, out = await subject.run(subject.job(script))
    assert code == 0
    lines = out.decode().splitlines()
    assert [x for x in lines if x.startswith("out ")] == [f"out {i}" for i in range(1, 3001)]
    assert [x for x in lines if x.startswith("err ")] == [f"err {i}" for i in range(1, 3001)]


async def test_the_exit_code_is_returned(subject: Subject) -> None:
    assert (await subject.run(subject.job("exit 42\n")))[0] == 42


async def test_the_environment_arrives_as_given(subject: Subject) -> None:
    env = {"MULTI": "line one\nline two", "EQUALS": "a=b=c", "EMPTY": ""}
    code, out = await subject.run(subject.job('printf "%s|%s|%s." "$MULTI" "$EQUALS" "$EMPTY"\n', env))
    assert code == 0
    assert out == b"line one\nline two|a=b=c|."


async def test_cancelling_ends_the_step_before_returning(subject: Subject) -> None:
    marker = subject.executor.volume / "started"
    where = "/codefresh/volume/started" if subject.image else str(marker)
    seconds = str(300 + uuid.uuid4().int % 9000)  # a sleep no other test runs
    job = subject.job(f"touch {where}; sleep {seconds}\n")
    running = asyncio.create_task(subject.run(job))
    async with asyncio.timeout(60):
        while not marker.exists():
            await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert loop.time() - began < 10
    assert sleeping(seconds) == []
    if subject.engine is not None:  # and the step's container is gone
        assert subject.engine.containers(f"io.outpost.build={subject.executor.build_id}") == []
