"""The daemonless builder against real buildah (vfs, chroot isolation) and a real registry with htpasswd auth."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.containers.auth import RegistryAuth
from outpost.containers.buildah import Buildah, BuildahError
from tests import containers

registry, open_registry = containers.registry, containers.open_registry

pytestmark = pytest.mark.timeout(180)

BASE = "localhost/outpost-buildah/busybox:1"
IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


class Output:
    """Collects what a command streams."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def cli(builder: Buildah, *args: str) -> str:
    """buildah on the builder's storage, for assertions and cleanup."""
    assert builder.binary is not None
    argv = [builder.binary, "--root", str(builder.root / "storage"), "--runroot", str(builder.root / "run")]
    argv += ["--storage-driver", "vfs", *args]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (process group, command line) of every process on the machine."""
    found: dict[int, tuple[int, bytes]] = {}
    for folder in Path("/proc").iterdir():
        if not folder.name.isdigit():
            continue
        try:
            stat = (folder / "stat").read_text()
            cmdline = (folder / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        found[int(folder.name)] = (int(stat.rsplit(")", 1)[1].split()[2]), cmdline)
    return found


def auth_for(running: containers.Registry, password: str | None = None) -> RegistryAuth:
    return RegistryAuth(
        running.domain, running.username, password or running.password, insecure=True, name="test registry"
    )


def context_with(folder: Path, dockerfile: str, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    containers.need_buildah()
    root = tmp_path_factory.mktemp("buildah")
    made = Buildah(root)
    try:
        yield made
    finally:
        # vfs keeps plain folders (no overlay mounts), so removing the working containers and images is enough.
        cli(made, "rm", "--all")
        cli(made, "rmi", "--all", "--force")
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def base(builder: Buildah, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox base image made here (there is no Docker Hub); returns its id."""
    folder = tmp_path_factory.mktemp("busybox-context")
    shutil.copy(shutil.which("busybox") or "/bin/busybox", folder / "busybox")
    context_with(
        folder,
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "ENV PATH=/usr/local/bin:/usr/bin:/bin\n"
        'CMD ["/bin/sh"]\n',
    )
    return asyncio.run(builder.build(folder, tags=[BASE], output=Output()))


async def test_a_busybox_base_is_built_from_scratch(builder: Buildah, base: str) -> None:
    assert IMAGE_ID.fullmatch(base)
    assert BASE in await builder.images()
    assert cli(builder, "images", "--no-trunc", "--format", "{{.ID}}", BASE).strip() == base


async def test_a_build_uses_build_args_the_target_stage_and_labels(builder: Buildah, base: str, tmp_path: Path) -> None:
    context = context_with(
        tmp_path / "app",
        f"FROM {BASE} AS first\n"
        "ARG GREETING=unset\n"
        'RUN echo "$GREETING" > /greeting && echo "wrote greeting: $GREETING"\n'
        "COPY note.txt /note.txt\n"
        "FROM first AS second\n"
        "RUN echo second > /second-stage\n",
        **{"note.txt": "from the context\n"},
    )
    output = Output()
    image = await builder.build(
        context,
        tags=["localhost/outpost-buildah/app:1", "localhost/outpost-buildah/app:latest"],
        build_args={"GREETING": "hello from args"},
        target="first",
        labels={"org.outpost.pipeline": "demo", "org.outpost.build": "42"},
        output=output,
    )
    assert IMAGE_ID.fullmatch(image)
    assert "wrote greeting: hello from args" in output.text  # streamed output of the RUN
    assert "second-stage" not in output.text  # the stage after the target was not built
    names = await builder.images()
    assert {"localhost/outpost-buildah/app:1", "localhost/outpost-buildah/app:latest"} <= set(names)
    listed = cli(builder, "images", "--no-trunc", "--format", "{{.ID}}", "localhost/outpost-buildah/app:1")
    assert set(listed.split()) == {image}  # one line per name, both the same image
    labels = json.loads(cli(builder, "inspect", "--type", "image", image))["OCIv1"]["config"]["Labels"]
    assert labels["org.outpost.pipeline"] == "demo"
    assert labels["org.outpost.build"] == "42"

    # What the RUN wrote is in the image: a build FROM it reads it back.
    check = Output()
    await builder.build(
        context,
        dockerfile_content=f"FROM {image}\nRUN cat /greeting /note.txt && test ! -e /second-stage\n",
        tags=["localhost/outpost-buildah/check:1"],
        no_cache=True,
        output=check,
    )
    assert "hello from args" in check.text
    assert "from the context" in check.text


async def test_an_inline_dockerfile_stays_out_of_the_context(builder: Buildah, base: str, tmp_path: Path) -> None:
    context = tmp_path / "inline"
    context.mkdir()
    (context / "data.txt").write_text("inline data\n")
    output = Output()
    image = await builder.build(
        context,
        dockerfile_content=f"FROM {BASE}\nCOPY data.txt /data.txt\nRUN cat /data.txt\n",
        tags=["localhost/outpost-buildah/inline:1"],
        output=output,
    )
    assert IMAGE_ID.fullmatch(image)
    assert "inline data" in output.text
    assert sorted(p.name for p in context.iterdir()) == ["data.txt"]
    assert list((builder.root / "calls").iterdir()) == []  # the private temp folder is gone


async def test_a_failing_run_raises_with_its_output_streamed(builder: Buildah, base: str, tmp_path: Path) -> None:
    context = context_with(tmp_path / "fails", f"FROM {BASE}\nRUN echo about-to-fail && exit 3\n")
    output = Output()
    with pytest.raises(BuildahError) as raised:
        await builder.build(context, tags=["localhost/outpost-buildah/fails:1"], output=output)
    assert "about-to-fail" in output.text
    message = str(raised.value)
    assert message.startswith("buildah build failed with exit code")
    assert "exit status 3" in message  # the last line: which step failed, and how
    assert "localhost/outpost-buildah/fails:1" not in await builder.images()
    assert cli(builder, "containers", "--quiet").strip() == ""  # no working container left behind


async def test_a_dockerfile_outside_the_context_is_refused(builder: Buildah, tmp_path: Path) -> None:
    context = context_with(tmp_path / "ctx", "FROM scratch\n")
    (tmp_path / "Outside.Dockerfile").write_text("FROM scratch\n")
    (context / "link.Dockerfile").symlink_to(tmp_path / "Outside.Dockerfile")
    for dockerfile in ("../Outside.Dockerfile", str(tmp_path / "Outside.Dockerfile"), "link.Dockerfile"):
        with pytest.raises(BuildahError, match="outside the build context"):
            await builder.build(context, dockerfile=dockerfile, tags=["localhost/x:1"], output=Output())
    with pytest.raises(BuildahError, match="no Dockerfile 'Missing'"):
        await builder.build(context, dockerfile="Missing", tags=["localhost/x:1"], output=Output())


async def test_a_push_returns_the_digest_the_registry_stores_and_no_argv_holds_the_password(
    builder: Buildah, base: str, registry: containers.Registry
) -> None:
    assert registry.password is not None
    seen: set[bytes] = set()
    pushing = asyncio.create_task(
        builder.push(BASE, f"{registry.domain}/team/base:1", auth=auth_for(registry), output=Output())
    )
    while not pushing.done():
        seen |= {cmdline for _, cmdline in processes().values() if b"buildah" in cmdline}
        await asyncio.sleep(0.005)
    digest = await pushing
    assert digest == registry.digest("team/base", "1")
    assert registry.tags("team/base") == ["1"]
    assert any(b"push" in cmdline for cmdline in seen)  # the watch did see the push running
    assert not [cmdline for cmdline in seen if registry.password.encode() in cmdline]


async def test_a_wrong_password_is_reported_as_refused_credentials(
    builder: Buildah, base: str, registry: containers.Registry
) -> None:
    wrong = "not-the-" + uuid.uuid4().hex
    seen: set[bytes] = set()
    pushing = asyncio.create_task(
        builder.push(BASE, f"{registry.domain}/team/base:1", auth=auth_for(registry, wrong), output=Output())
    )
    while not pushing.done():
        seen |= {cmdline for _, cmdline in processes().values() if b"buildah" in cmdline}
        await asyncio.sleep(0.005)
    with pytest.raises(BuildahError) as raised:
        await pushing
    message = str(raised.value)
    assert f"the registry refused the credentials for {registry.domain}" in message
    assert wrong not in message
    assert not [cmdline for cmdline in seen if wrong.encode() in cmdline]
    assert registry.tags("team/base") == []


async def test_the_hosts_docker_credentials_are_never_used(
    builder: Buildah, base: str, registry: containers.Registry, tmp_path: Path
) -> None:
    # The runner's own ~/.docker/config.json holds good credentials for the registry; the builder must not use them.
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {registry.domain: {"auth": token}}}))
    env = {**os.environ, "HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}
    isolated = Buildah(builder.root, env=env)
    plain_http = RegistryAuth(registry.domain, insecure=True)
    with pytest.raises(BuildahError, match=f"the registry {re.escape(registry.domain)} wants credentials"):
        await isolated.push(BASE, f"{registry.domain}/team/base:1", auth=plain_http, output=Output())
    assert registry.tags("team/base") == []


async def test_a_build_pulls_its_base_from_a_private_registry_with_credentials(
    builder: Buildah, base: str, registry: containers.Registry, tmp_path: Path
) -> None:
    private = f"{registry.domain}/team/base:1"
    await builder.push(BASE, private, auth=auth_for(registry), output=Output())
    cli(builder, "tag", BASE, private)
    await builder.remove(private)
    assert private not in await builder.images()

    context = context_with(tmp_path / "private", f"FROM {private}\nRUN echo built-on-private-base\n")
    plain_http = RegistryAuth(registry.domain, insecure=True)  # reachable, but no credentials
    with pytest.raises(BuildahError, match=f"the registry {re.escape(registry.domain)} wants credentials"):
        await builder.build(context, tags=["localhost/outpost-buildah/private:1"], auths=[plain_http], output=Output())

    output = Output()
    image = await builder.build(
        context, tags=["localhost/outpost-buildah/private:1"], auths=[auth_for(registry)], output=output
    )
    assert IMAGE_ID.fullmatch(image)
    assert "built-on-private-base" in output.text
    assert private in await builder.images()  # pulled
    await builder.remove(private)
    await builder.remove(private)  # a second time: absent is fine


async def test_a_cancelled_build_ends_every_process_it_started(builder: Buildah, base: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    # The shell prints "running-42-<marker>" only once the RUN is running (buildah echoes the step text before).
    context = context_with(tmp_path / "slow", f"FROM {BASE}\nRUN echo running-$((40+2))-{marker} && sleep 300\n")
    output = Output()
    building = asyncio.create_task(
        builder.build(context, tags=["localhost/outpost-buildah/slow:1"], no_cache=True, output=output)
    )
    async with asyncio.timeout(60):
        while f"running-42-{marker}" not in output.text:
            await asyncio.sleep(0.05)
    groups = {group for group, cmdline in processes().values() if marker.encode() in cmdline}
    assert groups  # the RUN's shell, found by its command line
    assert any(b"sleep\x00300" in cmdline for group, cmdline in processes().values() if group in groups)

    started = time.monotonic()
    building.cancel()
    with pytest.raises(asyncio.CancelledError):
        await building
    assert time.monotonic() - started < 10
    assert [pid for pid, (group, _) in processes().items() if group in groups] == []
    assert cli(builder, "containers", "--quiet").strip() == ""
    assert list((builder.root / "calls").iterdir()) == []


async def test_a_missing_buildah_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(BuildahError, match=r"buildah is not installed on this runner \(apt-get install buildah\)"):
        await Buildah(tmp_path, binary=str(tmp_path / "no-buildah")).images()
