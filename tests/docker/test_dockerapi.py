"""The Docker Engine API client against a real engine and a real registry: output, exit codes, networks, builds,
pushes and pulls, cancellation, and nothing left behind."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.containers.auth import RegistryAuth
from outpost.containers.dockerapi import (
    ContainerSpec,
    Docker,
    DockerError,
    NotFound,
    _Cursor,
    _frames,
    _split_reference,
)
from tests import containers

dockerd, busybox_image, registry, open_registry = (
    containers.dockerd,
    containers.busybox_image,
    containers.registry,
    containers.open_registry,
)

pytestmark = pytest.mark.timeout(120)

LABEL = "outpost.test"


@pytest.fixture
async def docker(dockerd: containers.Dockerd) -> AsyncIterator[Docker]:
    async with Docker(dockerd.host) as client:
        yield client


@pytest.fixture
def mark(dockerd: containers.Dockerd) -> Iterator[str]:
    """A unique label value for what one test creates; whatever a failed test left is removed afterwards."""
    value = uuid.uuid4().hex[:12]
    yield value
    for container in dockerd.containers(f"{LABEL}={value}"):
        dockerd.api("DELETE", f"/containers/{container['Id']}", params={"force": "1", "v": "1"})
    for network in dockerd.networks(f"{LABEL}={value}"):
        dockerd.api("DELETE", f"/networks/{network['Id']}")


def spec(image: str, mark: str, *cmd: str, **fields: Any) -> ContainerSpec:
    return ContainerSpec(image=image, cmd=list(cmd), labels={LABEL: mark}, **fields)


async def run(docker: Docker, container: ContainerSpec) -> tuple[int, bytes]:
    """Creates, starts, reads all output, waits and removes; returns (exit code, output)."""
    container_id = await docker.create_container(container)
    try:
        await docker.start(container_id)
        output = b"".join([chunk async for chunk in docker.output(container_id)])
        return await docker.wait(container_id), output
    finally:
        await docker.remove(container_id)


# --- the engine and containers ----------------------------------------------------------------------------------


async def test_the_engine_tells_its_version(docker: Docker) -> None:
    assert (await docker.version()).startswith("20.10")


async def test_stdout_and_stderr_arrive_complete_and_in_order(docker: Docker, busybox_image: str, mark: str) -> None:
    script = "for i in $(seq 1 2000); do echo out$i; echo err$i >&2; done"
    code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", script))
    assert code == 0
    lines = output.decode().splitlines()
    assert len(lines) == 4000
    assert [line for line in lines if line.startswith("out")] == [f"out{i}" for i in range(1, 2001)]
    assert [line for line in lines if line.startswith("err")] == [f"err{i}" for i in range(1, 2001)]


async def test_slow_interleaved_output_keeps_its_merged_order(docker: Docker, busybox_image: str, mark: str) -> None:
    script = "for i in 1 2 3 4; do echo out$i; sleep 0.1; echo err$i >&2; sleep 0.1; done"
    code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", script))
    assert code == 0
    assert output.decode().split() == [f"{stream}{i}" for i in range(1, 5) for stream in ("out", "err")]


async def test_output_printed_before_it_is_read_is_not_lost(docker: Docker, busybox_image: str, mark: str) -> None:
    for _ in range(5):  # the container is often gone before output() asks
        code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", "echo first; echo second >&2"))
        # The engine reads stdout and stderr from two pipes: writes a microsecond apart may swap places.
        assert (code, sorted(output.splitlines())) == (0, [b"first", b"second"])
    # Even read after the container has ended, output starts from the first byte.
    container_id = await docker.create_container(spec(busybox_image, mark, "echo", "late reader"))
    try:
        await docker.start(container_id)
        assert await docker.wait(container_id) == 0
        assert b"".join([chunk async for chunk in docker.output(container_id)]) == b"late reader\n"
    finally:
        await docker.remove(container_id)


async def test_the_last_words_of_a_container_are_never_lost(docker: Docker, busybox_image: str, mark: str) -> None:
    # The engine's followed log used to drop a last line written right before the exit, about one time in thirty.
    for i in range(30):
        code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", f"printf 'first\\nlast {i}'"))
        assert (code, output) == (0, f"first\nlast {i}".encode())


async def test_output_over_several_seconds_comes_once(docker: Docker, busybox_image: str, mark: str) -> None:
    script = "echo a; sleep 1.1; echo b; sleep 1.1; echo c; for i in $(seq 1 300); do echo d$i; done; printf end"
    code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", script))
    assert code == 0
    assert output.decode().split() == ["a", "b", "c", *(f"d{i}" for i in range(1, 301)), "end"]


def test_a_log_cursor_resumes_a_second_before_its_newest_entry() -> None:
    cursor = _Cursor()
    assert cursor.resume() == (None, 0)
    for second in (100, 101, 103, 103, 102, 104, 104):  # stdout and stderr may be stamped out of order
        cursor.add(second)
    assert cursor.resume() == (103, 4)


async def test_wait_returns_the_exit_code(docker: Docker, busybox_image: str, mark: str) -> None:
    assert (await run(docker, spec(busybox_image, mark, "sh", "-c", "exit 7")))[0] == 7


async def test_a_paused_container_runs_nothing_until_unpaused_and_pausing_what_does_not_run_is_fine(
    docker: Docker, dockerd: containers.Dockerd, busybox_image: str, mark: str
) -> None:
    script = "for i in $(seq 1 30); do echo $i; sleep 0.1; done"
    container_id = await docker.create_container(spec(busybox_image, mark, "sh", "-c", script))
    try:
        await docker.pause(container_id)  # created, not started: nothing to freeze
        await docker.start(container_id)
        await asyncio.sleep(0.5)
        await docker.pause(container_id)
        await docker.pause(container_id)  # already paused: the same
        state = dockerd.api("GET", f"/containers/{container_id}/json").json()["State"]
        assert (state["Status"], state["Paused"]) == ("paused", True)
        await asyncio.sleep(1.5)
        assert dockerd.api("GET", f"/containers/{container_id}/json").json()["State"]["Status"] == "paused"
        await docker.unpause(container_id)
        assert await asyncio.wait_for(docker.wait(container_id), 30) == 0
        output = b"".join([chunk async for chunk in docker.output(container_id)])
        assert output.split() == [str(i).encode() for i in range(1, 31)]
    finally:
        await docker.remove(container_id)
    await docker.pause(container_id)  # gone: fine too
    await docker.unpause(container_id)


async def test_a_missing_command_fails_at_start(docker: Docker, busybox_image: str, mark: str) -> None:
    container_id = await docker.create_container(spec(busybox_image, mark, "/no/such/program"))
    try:
        with pytest.raises(DockerError, match="no such file or directory"):
            await docker.start(container_id)
    finally:
        await docker.remove(container_id)


async def test_creating_from_a_missing_image_is_not_found(docker: Docker, mark: str) -> None:
    with pytest.raises(NotFound, match="localhost/no-such-image"):
        await docker.create_container(spec("localhost/no-such-image:1", mark, "true"))


async def test_env_values_with_newlines_and_equals_signs_survive(docker: Docker, busybox_image: str, mark: str) -> None:
    env = {"MULTI": "line one\nline=two", "EQ": "a=b=c", "PADDED": "  spaced  ", "EMPTY": ""}
    script = 'printf "[%s]" "$MULTI" "$EQ" "$PADDED" "$EMPTY"'
    code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", script, env=env))
    assert (code, output) == (0, b"[line one\nline=two][a=b=c][  spaced  ][]")


async def test_binds_and_workdir(docker: Docker, busybox_image: str, mark: str, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "in.txt").write_text("from the host\n")
    (tmp_path / "readonly").mkdir()
    script = "pwd; cat in.txt; echo written > out.txt; (echo no > /ro/x) 2>/dev/null || echo refused"
    binds = [f"{tmp_path / 'work'}:/work", f"{tmp_path / 'readonly'}:/ro:ro"]
    code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", script, binds=binds, workdir="/work"))
    assert (code, output) == (0, b"/work\nfrom the host\nrefused\n")
    assert (tmp_path / "work" / "out.txt").read_text() == "written\n"
    assert not (tmp_path / "readonly" / "x").exists()


async def test_user_extra_hosts_and_entrypoint(docker: Docker, busybox_image: str, mark: str) -> None:
    script = "id -u; grep -w registry.example /etc/hosts"
    container = spec(
        busybox_image, mark, "-c", script, entrypoint=["sh"], user="1234", extra_hosts=["registry.example:10.1.2.3"]
    )
    code, output = await run(docker, container)
    assert code == 0
    assert output.decode().split() == ["1234", "10.1.2.3", "registry.example"]


async def test_a_container_reaches_another_by_alias_on_a_network(
    docker: Docker, dockerd: containers.Dockerd, busybox_image: str, mark: str
) -> None:
    name = f"outpost-test-{mark}"
    network_id = await docker.create_network(name, {LABEL: mark})
    try:
        assert [n["Id"] for n in await docker.networks(f"{LABEL}={mark}")] == [network_id]
        server = spec(busybox_image, mark, "nc", "-ll", "-p", "8080", "-e", "echo", "hello from the server")
        server.network, server.aliases = name, ["backend"]
        server_id = await docker.create_container(server)
        try:
            await docker.start(server_id)
            script = "for i in $(seq 1 50); do nc backend 8080 && exit 0; sleep 0.2; done; exit 1"
            code, output = await run(docker, spec(busybox_image, mark, "sh", "-c", script, network=name))
            assert (code, output) == (0, b"hello from the server\n")
        finally:
            await docker.remove(server_id)
    finally:
        await docker.remove_network(name)
    assert await docker.networks(f"{LABEL}={mark}") == []
    assert dockerd.containers(f"{LABEL}={mark}") == []


async def test_stop_kills_a_sleeper_quickly_and_remove_leaves_nothing(
    docker: Docker, dockerd: containers.Dockerd, busybox_image: str, mark: str
) -> None:
    container_id = await docker.create_container(spec(busybox_image, mark, "sleep", "300", name=f"sleeper-{mark}"))
    try:
        await docker.start(container_id)
        assert [c["Id"] for c in await docker.containers(f"{LABEL}={mark}")] == [container_id]
        started = time.monotonic()
        await docker.stop(container_id, grace=1)  # sleep as PID 1 ignores SIGTERM: this takes the SIGKILL
        assert time.monotonic() - started < 5
        assert await docker.wait(container_id) == 137
    finally:
        await docker.remove(container_id)
    assert dockerd.containers(f"{LABEL}={mark}") == []
    # Absent things are fine to stop and remove again.
    await docker.stop(container_id)
    await docker.remove(container_id)
    await docker.remove_network(f"outpost-test-{mark}")


async def test_cancelling_output_or_wait_is_prompt_and_harmless(docker: Docker, busybox_image: str, mark: str) -> None:
    container_id = await docker.create_container(spec(busybox_image, mark, "sh", "-c", "echo started; sleep 300"))
    try:
        await docker.start(container_id)
        seen = asyncio.Event()

        async def read() -> None:
            async for _ in docker.output(container_id):
                seen.set()

        for task in (asyncio.create_task(read()), asyncio.create_task(docker.wait(container_id))):
            if not seen.is_set():
                await asyncio.wait_for(seen.wait(), 10)
            await asyncio.sleep(0.2)
            assert not task.done()
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 1
        assert (await docker.version()).startswith("20.10")
        await docker.stop(container_id, grace=0)
        assert await docker.wait(container_id) == 137
    finally:
        await docker.remove(container_id)


# --- errors without an engine -----------------------------------------------------------------------------------


async def test_a_missing_socket_says_the_engine_cannot_be_reached(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    async with Docker(host) as client:
        with pytest.raises(DockerError, match=f"cannot reach the Docker engine at {host}: .*is dockerd running"):
            await client.version()


@pytest.mark.parametrize("host", ["tcp://127.0.0.1:2375", "unix://relative.sock", "/var/run/docker.sock"])
def test_other_docker_hosts_are_refused(host: str) -> None:
    with pytest.raises(DockerError, match="unsupported DOCKER_HOST"):
        Docker(host)


@pytest.mark.parametrize(
    ("ref", "repository", "tag"),
    [
        ("busybox", "busybox", "latest"),
        ("localhost/busybox:1", "localhost/busybox", "1"),
        ("127.0.0.1:5000/team/app:v2", "127.0.0.1:5000/team/app", "v2"),
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app", "latest"),
        ("app@sha256:" + "a" * 64, "app", "sha256:" + "a" * 64),
        ("host:1/app:1@sha256:" + "b" * 64, "host:1/app", "sha256:" + "b" * 64),
    ],
)
def test_references_split_into_repository_and_tag(ref: str, repository: str, tag: str) -> None:
    assert _split_reference(ref) == (repository, tag)


def test_frames_split_across_chunks_are_put_back_together() -> None:
    payloads = [b"out\n", b"", b"err" * 10_000, b"\x00\xff"]
    stream = b"".join(bytes([1 + i % 2, 0, 0, 0]) + len(p).to_bytes(4, "big") + p for i, p in enumerate(payloads))
    buffer, seen = bytearray(), list[bytes]()
    for start in range(0, len(stream), 3):
        buffer += stream[start : start + 3]
        seen.extend(_frames(buffer))
    assert seen == payloads
    assert not buffer


# --- builds -----------------------------------------------------------------------------------------------------


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        self.data += chunk

    @property
    def text(self) -> str:
        return self.data.decode()


async def test_a_build_takes_args_target_labels_and_dockerignore(
    docker: Docker, busybox_image: str, mark: str, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    (context / "docker").mkdir(parents=True)
    (context / "logs").mkdir()
    (context / "app.txt").write_text("the app\n")
    (context / "secret.txt").write_text("do not send\n")
    (context / "logs" / "a.log").write_text("log\n")
    (context / "logs" / "keep.log").write_text("kept\n")
    (context / ".dockerignore").write_text("# comment\nsecret.txt\nlogs\n!logs/keep.log\n")
    (context / "docker" / "Dockerfile").write_text(
        f"FROM {busybox_image} AS base\n"
        "ARG GREETING=none\n"
        "COPY . /ctx/\n"
        'RUN echo "$GREETING" > /greeting.txt && echo "ran with $GREETING"\n'
        "FROM base AS extra\n"
        "RUN touch /extra.txt\n"
    )
    tag = f"localhost/outpost-test-{mark}:1"
    output = Collect()
    image = await docker.build(
        context,
        dockerfile="docker/Dockerfile",
        tags=[tag, f"localhost/outpost-test-{mark}:also"],
        build_args={"GREETING": "hello there"},
        target="base",
        labels={LABEL: mark},
        output=output,
    )
    try:
        assert image.startswith("sha256:")
        inspected = await docker.inspect_image(tag)
        assert inspected is not None
        assert inspected["Id"] == image
        assert inspected["Config"]["Labels"][LABEL] == mark
        assert "Step 1/" in output.text
        assert "ran with hello there" in output.text
        script = "cat /greeting.txt; cd /ctx; find . -type f | sort; test -e /extra.txt || echo no extra"
        code, out = await run(docker, spec(tag, mark, "sh", "-c", script))
        assert code == 0
        assert out.decode().splitlines() == [
            "hello there",
            "./.dockerignore",
            "./app.txt",
            "./docker/Dockerfile",
            "./logs/keep.log",
            "no extra",
        ]
    finally:
        await docker.remove_image(tag)
        await docker.remove_image(f"localhost/outpost-test-{mark}:also")
    assert await docker.inspect_image(tag) is None


async def test_an_inline_dockerfile_stays_out_of_the_image(
    docker: Docker, busybox_image: str, mark: str, tmp_path: Path
) -> None:
    (tmp_path / "app.txt").write_text("the app\n")
    (tmp_path / ".outpost.Dockerfile").write_text("FROM nothing-like-this\n")  # the context's own file: no clash
    tag = f"localhost/outpost-test-{mark}:1"
    dockerfile = f'FROM {busybox_image}\nCOPY . /ctx/\nENTRYPOINT ["echo", "entrypoint:"]\n'
    image = await docker.build(tmp_path, dockerfile_content=dockerfile, tags=[tag], no_cache=True)
    try:
        code, output = await run(docker, spec(image, mark, "sh", "-c", "cd /ctx && ls -A", entrypoint=[]))
        assert (code, output.decode().split()) == (0, [".outpost.Dockerfile", "app.txt"])
        # entrypoint=None keeps the image's
        assert await run(docker, spec(image, mark, "a", "b")) == (0, b"entrypoint: a b\n")
    finally:
        await docker.remove_image(tag)


async def test_a_failing_build_raises_after_streaming_its_log(
    docker: Docker, dockerd: containers.Dockerd, busybox_image: str, tmp_path: Path
) -> None:
    before = {c["Id"] for c in dockerd.containers()}
    dockerfile = f"FROM {busybox_image}\nRUN echo step two\nRUN echo boom-message >&2 && exit 3\nRUN echo never\n"
    output = Collect()
    with pytest.raises(DockerError, match=r"echo boom-message.*returned a non-zero code: 3"):
        await docker.build(tmp_path, dockerfile_content=dockerfile, output=output)
    assert "Step 2/4 : RUN echo step two" in output.text
    assert "boom-message" in output.text
    assert "Step 4/4" not in output.text
    assert {c["Id"] for c in dockerd.containers()} == before  # forcerm: no intermediate container left


async def test_cancelling_a_build_is_prompt_and_leaves_no_container(
    docker: Docker, dockerd: containers.Dockerd, busybox_image: str, tmp_path: Path
) -> None:
    before = {c["Id"] for c in dockerd.containers()}
    running = asyncio.Event()

    async def output(chunk: bytes) -> None:
        if b"sleeping" in chunk:
            running.set()

    dockerfile = f"FROM {busybox_image}\nRUN echo sleeping && sleep 60\n"
    task = asyncio.create_task(docker.build(tmp_path, dockerfile_content=dockerfile, output=output, no_cache=True))
    await asyncio.wait_for(running.wait(), 30)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1
    # The engine notices the closed connection and removes the RUN step's container.
    deadline = time.monotonic() + 20
    while {c["Id"] for c in dockerd.containers()} != before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert {c["Id"] for c in dockerd.containers()} == before
    assert (await docker.version()).startswith("20.10")


async def test_a_build_pulls_from_a_private_registry_with_the_given_credentials(
    docker: Docker, busybox_image: str, registry: containers.Registry, tmp_path: Path
) -> None:
    auth = RegistryAuth(registry.domain, registry.username, registry.password)
    base = f"{registry.domain}/outpost/base-{uuid.uuid4().hex[:8]}"
    await docker.tag(busybox_image, base, "1")
    await docker.push(base, "1", auth)
    await docker.remove_image(f"{base}:1")
    dockerfile = f"FROM {base}:1\nRUN echo built on the private base\n"
    try:
        with pytest.raises(DockerError, match="no basic auth credentials"):
            await docker.build(tmp_path, dockerfile_content=dockerfile)
        output = Collect()
        image = await docker.build(tmp_path, dockerfile_content=dockerfile, auths=[auth], output=output)
        assert "built on the private base" in output.text
        assert f"1: Pulling from {base.split('/', 1)[1]}" in output.text
        await docker.remove_image(image)
    finally:
        await docker.remove_image(f"{base}:1")


async def test_an_httpx_error_of_a_callback_is_not_blamed_on_the_engine(
    docker: Docker, busybox_image: str, tmp_path: Path
) -> None:
    async def output(chunk: bytes) -> None:
        raise httpx.ConnectError("the log sink is down")

    with pytest.raises(httpx.ConnectError, match="the log sink is down"):
        await docker.build(tmp_path, dockerfile_content=f"FROM {busybox_image}\n", output=output)


async def test_a_dockerfile_outside_the_context_is_refused(docker: Docker, busybox_image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\n")
    context = tmp_path / "context"
    context.mkdir()
    (context / "link").symlink_to(tmp_path / "Dockerfile")
    for dockerfile in ("../Dockerfile", str(tmp_path / "Dockerfile"), "link"):
        with pytest.raises(DockerError, match="outside the build context"):
            await docker.build(context, dockerfile=dockerfile)
    with pytest.raises(DockerError, match="no Dockerfile 'Dockerfile'"):
        await docker.build(context)


async def test_a_broken_dockerfile_is_an_error(docker: Docker, tmp_path: Path) -> None:
    with pytest.raises(DockerError, match="unknown instruction"):
        await docker.build(tmp_path, dockerfile_content="FROM scratch\nFROBNICATE now\n")


# --- registries -------------------------------------------------------------------------------------------------


async def test_push_then_pull_back_with_credentials(
    docker: Docker, busybox_image: str, registry: containers.Registry
) -> None:
    auth = RegistryAuth(registry.domain, registry.username, registry.password)
    repository = f"{registry.domain}/outpost/pushed-{uuid.uuid4().hex[:8]}"
    await docker.tag(busybox_image, repository, "1")
    digest = ""
    try:
        pushed: list[str] = []

        async def note(line: str) -> None:
            pushed.append(line)

        digest = await docker.push(repository, "1", auth, note)
        assert digest == registry.digest(repository.split("/", 1)[1], "1")
        assert any(line.endswith(": Pushed") for line in pushed)

        await docker.remove_image(f"{repository}:1")
        assert await docker.inspect_image(f"{repository}:1") is None
        pulled: list[str] = []

        async def progress(line: str) -> None:
            pulled.append(line)

        await docker.pull(f"{repository}:1", auth, progress)
        inspected = await docker.inspect_image(f"{repository}:1")
        assert inspected is not None
        assert f"{repository}@{digest}" in inspected["RepoDigests"]
        assert "1: Pulling from outpost/" + repository.rsplit("/", 1)[1] in pulled
        assert f"Digest: {digest}" in pulled
        assert any(line.startswith("Status: Downloaded newer image") for line in pulled)
        assert not any("Downloading" in line or "Extracting" in line for line in pulled)
        assert len(pulled) == len(set(pulled))

        # By digest too; and ensure_image does not pull what is there.
        await docker.pull(f"{repository}@{digest}", auth)
        ensured: list[str] = []

        async def ensure_progress(line: str) -> None:
            ensured.append(line)

        await docker.ensure_image(f"{repository}:1", auth, ensure_progress)
        assert ensured == []
    finally:
        await docker.remove_image(f"{repository}:1")
        if digest:
            await docker.remove_image(f"{repository}@{digest}")


async def test_push_with_a_wrong_password_says_authentication_failed(
    docker: Docker, busybox_image: str, registry: containers.Registry
) -> None:
    repository = f"{registry.domain}/outpost/refused"
    await docker.tag(busybox_image, repository, "1")
    try:
        wrong = RegistryAuth(registry.domain, registry.username, "wrong")
        for auth, message in ((wrong, "unauthorized: authentication required"), (None, "no basic auth credentials")):
            with pytest.raises(DockerError, match=f"^push {repository}:1: {message}$"):
                await docker.push(repository, "1", auth)
        assert registry.tags("outpost/refused") == []
    finally:
        await docker.remove_image(f"{repository}:1")


async def test_pulling_without_credentials_or_a_missing_image_fails_clearly(
    docker: Docker, registry: containers.Registry, open_registry: containers.Registry
) -> None:
    with pytest.raises(NotFound, match=f"pull {open_registry.domain}/outpost/missing:1: .*not found"):
        await docker.pull(f"{open_registry.domain}/outpost/missing:1")
    with pytest.raises(DockerError, match=f"pull {registry.domain}/outpost/private:1: .*no basic auth credentials"):
        await docker.pull(f"{registry.domain}/outpost/private:1")
    assert await docker.inspect_image(f"{open_registry.domain}/outpost/missing:1") is None
