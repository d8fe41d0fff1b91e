"""The Docker executor: every step runs in a container of a Docker engine next to the runner.

Each build gets its own bridge network (steps, services and composition containers find each other by name on it)
and labels every container it makes with its id; leaving the build removes them all and the network, whatever
happened. The build volume is mounted at /codefresh/volume in every step. Images are pulled with the credentials of
the registry integration whose domain they name. `build` steps use the engine's classic builder, or buildah when the
runner is started with `--builder buildah` (then the image is also handed to the engine for the steps that run it).
A pause freezes every running container of the build (the engine's pause: steps, services, candidates) and holds
back containers not started yet; a resume unpauses them. An image build or push in progress is not paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import httpx

from outpost.containers import images
from outpost.containers.auth import RegistryAuth
from outpost.containers.buildah import Buildah
from outpost.containers.dockerapi import ContainerSpec, Docker, DockerError
from outpost.errors import ExecutorError
from outpost.executors.base import (
    VOLUME_IN_STEP,
    BuiltImage,
    CompositionJob,
    Executor,
    ImageBuildJob,
    Output,
    PushJob,
    Readiness,
    ServiceSpec,
    StepJob,
)

LABEL = "io.outpost.build"  # every container and network of a build carries its id
TOOLS_IN_STEP = "/codefresh/outpost/bin"  # cf_export, mounted read-only
KUBECONFIG_IN_STEP = "/codefresh/outpost/kubeconfig"  # the build's clusters (a step's own file), read-only
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a step is cancelled
DRAIN_AFTER_EXIT = 5.0  # seconds to collect output still in flight after a container exited
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class DockerExecutor(Executor):
    name: ClassVar[str] = "docker"
    step_types: ClassVar[frozenset[str]] = frozenset({"build", "push", "composition"})
    takes_kubeconfig: ClassVar[bool] = True

    def __init__(
        self, volume: Path, scratch: Path, *, build_id: str = "", options: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(volume, scratch, build_id=build_id, options=options)
        self.host = self.options.get("docker_host") or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        self.builder = self.options.get("builder") or "docker"
        if self.builder not in ("docker", "buildah"):
            raise ExecutorError(f"unknown builder {self.builder!r} (known: docker, buildah)")
        self._docker: Docker | None = None
        self._network: str | None = None
        self._pulled: set[str] = set()
        self._pulling = asyncio.Lock()
        self._by_buildah: set[str] = set()  # references and ids buildah built (pushed from its own storage)
        self._serial = 0
        self._thawed = asyncio.Event()  # cleared while paused: no container starts
        self._thawed.set()

    @classmethod
    async def preflight(cls, options: Mapping[str, str]) -> str | None:
        host = options.get("docker_host") or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        async with Docker(host) as docker:
            version = await docker.version()
        builder = options.get("builder") or "docker"
        if builder == "buildah" and not Buildah.installed():
            raise ExecutorError("--builder buildah: buildah is not installed on this runner (apt-get install buildah)")
        return f"Docker engine {version} at {host}; images built by {builder}"

    def volume_in_step(self) -> str:
        return VOLUME_IN_STEP

    @property
    def docker(self) -> Docker:
        if self._docker is None:
            raise ExecutorError("the Docker executor is used outside `async with`")
        return self._docker

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.build_id}

    # --- the build's lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._docker = Docker(self.host)
        try:
            # No version check here: the runner's preflight did it, and an engine gone since fails this call
            # with the same "cannot reach" message (one request less on every build).
            self._network = f"outpost-{_slug(self.build_id)[:24]}-{secrets.token_hex(3)}"
            await self._docker.create_network(self._network, self.labels)
        except BaseException:
            await self._docker.aclose()
            self._docker = None
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        docker, self._docker = self._docker, None
        if docker is None:
            return
        try:
            # Shielded: a cancelled build must still not leave containers or its network behind.
            await asyncio.shield(_remove_build(docker, self.build_id, self._network))
        finally:
            await docker.aclose()

    @classmethod
    def after_crash(cls, volume: Path, scratch: Path, build_id: str, options: Mapping[str, str] | None = None) -> None:
        """Removes the containers and network a crashed runner left for this build."""
        host = (options or {}).get("docker_host") or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        if not host.startswith("unix://"):
            return
        socket = host[len("unix://") :]
        if not Path(socket).exists():  # (httpx would leave the socket of a failed connect open)
            raise ExecutorError(f"cannot remove the containers of build {build_id} at {host}: no such socket")
        transport = httpx.HTTPTransport(uds=socket, verify=False)  # a unix socket: no TLS
        found = json.dumps({"label": [f"{LABEL}={build_id}"]})
        try:
            with httpx.Client(transport=transport, base_url="http://docker/v1.41", timeout=30) as client:
                for container in client.get("/containers/json", params={"all": "1", "filters": found}).json():
                    client.delete(f"/containers/{container['Id']}", params={"force": "1", "v": "1"})
                for network in client.get("/networks", params={"filters": found}).json():
                    client.delete(f"/networks/{network['Id']}")
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
            raise ExecutorError(f"cannot remove the containers of build {build_id} at {host}: {exc}") from exc

    # --- pause and resume ------------------------------------------------------------------------------

    async def pause(self) -> bool:
        self._thawed.clear()
        self.paused.pause()
        for container in await self.docker.containers(f"{LABEL}={self.build_id}"):
            if container.get("State") == "running":
                await self.docker.pause(str(container["Id"]))
        return True

    async def resume(self) -> None:
        self._thawed.set()
        self.paused.resume()
        for container in await self.docker.containers(f"{LABEL}={self.build_id}"):
            if container.get("State") == "paused":
                await self.docker.unpause(str(container["Id"]))

    async def _start(self, container: str) -> None:
        """Starts a container once the build is not paused; paused meanwhile, it is paused at once."""
        await self._thawed.wait()
        await self.docker.start(container)
        if not self._thawed.is_set():
            await self.docker.pause(container)

    async def _stop(self, container: str) -> None:
        """A cancelled container's stop, paused or not: the engine sends a paused container the signal and then
        unpauses it, so it runs nothing before the signal."""
        await self.docker.stop(container, STOP_GRACE)

    # --- freestyle steps -----------------------------------------------------------------------------

    async def run(self, job: StepJob, output: Output) -> int:
        if not job.image:
            raise ExecutorError("a freestyle step needs an `image` on the Docker executor")
        await self._ensure(job.image, job.auths, output)
        started: list[str] = []
        try:
            for service in job.services:
                started.append(await self._start_service(service, job.auths, output, prefix=True))
            if job.readiness is not None:
                await self._ready(job.readiness, job.auths, output)
            env = {k: v for k, v in job.env.items() if k not in job.host_env}
            if job.kubeconfig is not None:
                env["KUBECONFIG"] = KUBECONFIG_IN_STEP
            spec = ContainerSpec(
                image=job.image,
                name=self._name(job.step),
                env=env,
                workdir=job.workdir_in_step,
                binds=self._binds(job),
                network=self._network,
                labels=self.labels,
            )
            if job.cmd is not None or (job.entrypoint is not None and not job.script.strip()):
                spec.cmd, spec.entrypoint = job.cmd, job.entrypoint  # the image's own program, as `cmd` says
            else:  # `commands` replace the image's entrypoint
                shell = "/bin/sh" if job.shell == "sh" else job.shell
                spec.entrypoint = [shell, "-c"]
                spec.cmd = [f'PATH="$PATH:{TOOLS_IN_STEP}"\n' + job.script]
            return await self._run_container(spec, output)
        finally:
            await asyncio.shield(self._remove_all(started))

    def _binds(self, job: StepJob) -> list[str]:
        binds = [f"{self.volume}:{VOLUME_IN_STEP}"]
        tools = self.scratch / "bin"
        if tools.is_dir():
            binds.append(f"{tools}:{TOOLS_IN_STEP}:ro")
        binds += [f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in job.mounts]
        if job.kubeconfig is not None:
            binds.append(f"{job.kubeconfig}:{KUBECONFIG_IN_STEP}:ro")
        return binds

    async def _run_container(self, spec: ContainerSpec, output: Output) -> int:
        """Creates, starts and waits for one container, streaming its output; it is removed in every case."""
        container = await self.docker.create_container(spec)
        try:
            await self._start(container)
            # After start: the engine's log replays from the first byte, so nothing written meanwhile is lost.
            pump = asyncio.create_task(_pump(self.docker, container, output))
            try:
                code = await self.docker.wait(container)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_AFTER_EXIT):
                        await asyncio.shield(pump)
                return code
            except asyncio.CancelledError:
                await asyncio.shield(self._stop(container))
                raise
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, DockerError):
                    await pump
        finally:
            await asyncio.shield(self.docker.remove(container))

    # --- services and readiness ----------------------------------------------------------------------

    async def _start_service(
        self, service: ServiceSpec, auths: list[RegistryAuth], output: Output, *, prefix: bool
    ) -> str:
        await self._ensure(service.image, auths, output)
        container = await self.docker.create_container(self._spec(service))
        await self._start(container)
        await output(f"[outpost] service {service.name} started ({service.image})\n".encode())
        if prefix:
            _detach(_pump(self.docker, container, _prefixed(service.name, output)))
        return container

    async def _ready(self, readiness: Readiness, auths: list[RegistryAuth], output: Output) -> None:
        await self._ensure(readiness.image, auths, output)

        async def attempt() -> tuple[int, str]:
            spec = ContainerSpec(
                image=readiness.image,
                name=self._name("readiness"),
                entrypoint=["/bin/sh", "-c"],
                cmd=[readiness.script],
                network=self._network,
                labels=self.labels,
                binds=[f"{self.volume}:{VOLUME_IN_STEP}"],
            )
            quiet = _Tail()
            try:
                async with asyncio.timeout(readiness.timeout):
                    code = await self._run_container(spec, quiet)
                return code, quiet.last()
            except TimeoutError:
                return -1, quiet.last()

        await readiness.wait(attempt, output)

    async def _remove_all(self, containers: list[str]) -> None:
        for container in reversed(containers):
            with contextlib.suppress(DockerError):
                await self.docker.remove(container)

    # --- build, push, composition --------------------------------------------------------------------

    async def build_image(self, job: ImageBuildJob, output: Output) -> BuiltImage:
        # No build-id label on images: the classic builder commits a label as one more layer (~100 ms), and
        # images outlive builds anyway (later builds reuse their layers).
        builder = self._buildah() if self.builder == "buildah" else self.docker
        image_id = await build_with(builder, job, output)
        if isinstance(builder, Buildah):
            await self._hand_over(builder, job.tags, image_id)
        return BuiltImage(image_id=image_id, reference=job.tags[0], builder=self.builder)

    async def _hand_over(self, buildah: Buildah, tags: list[str], image_id: str) -> None:
        """Later steps run the image (`image: ${{build_step}}`): the engine gets a copy of what buildah built."""
        self._by_buildah.update([*tags, image_id])
        archive = self.scratch / "buildah-image.tar"
        try:
            for tag in tags:
                archive.unlink(missing_ok=True)  # buildah does not overwrite an archive
                await buildah.to_archive(tag, archive, output=_quiet)
                await self.docker.load(archive)
        finally:
            archive.unlink(missing_ok=True)

    def _buildah(self) -> Buildah:
        root = Path(self.options.get("buildah_root") or self.scratch / "buildah")
        return Buildah(root)

    async def push_image(self, job: PushJob, output: Output) -> str:
        digest = ""
        for target in job.targets:
            await output(f"[outpost] pushing {target}\n".encode())
            if job.image in self._by_buildah:
                digest = await self._buildah().push(job.image, target, auth=job.auth, output=output)
                continue
            digest = await tag_and_push(self.docker, job.image, target, job.auth, output)
        return digest

    async def compose(self, job: CompositionJob, output: Output) -> int:
        started: list[str] = []
        try:
            for service in job.services:
                started.append(await self._start_service(service, job.auths, output, prefix=True))
            runs = [self._candidate(candidate, job.auths, output) for candidate in job.candidates]
            codes = await asyncio.gather(*runs)
            for candidate, code in zip(job.candidates, codes, strict=True):
                await output(f"[outpost] candidate {candidate.name} exited with code {code}\n".encode())
            return next((code for code in codes if code != 0), 0)
        finally:
            await asyncio.shield(self._remove_all(started))

    async def _candidate(self, candidate: ServiceSpec, auths: list[RegistryAuth], output: Output) -> int:
        await self._ensure(candidate.image, auths, output)
        return await self._run_container(self._spec(candidate), _prefixed(candidate.name, output))

    def _spec(self, service: ServiceSpec) -> ContainerSpec:
        """A service or candidate on the build's network, reachable by its name."""
        return ContainerSpec(
            image=service.image,
            name=self._name(service.name),
            cmd=service.command,
            entrypoint=service.entrypoint,
            env=service.environment,
            workdir=service.working_dir,
            binds=[f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in service.mounts],
            network=self._network,
            aliases=[service.name],
            labels=self.labels,
        )

    # --- images ----------------------------------------------------------------------------------------

    async def _ensure(self, image: str, auths: list[RegistryAuth], output: Output) -> None:
        """Pulls `image` unless the engine has it; with the credentials of the registry it names."""
        if image in self._pulled:
            return
        async with self._pulling:
            if image in self._pulled or await self.docker.inspect_image(image) is not None:
                self._pulled.add(image)
                return
            try:
                auth = images.auth_for(image, {a.name or a.domain: a for a in auths})
            except ValueError as exc:
                raise ExecutorError(str(exc)) from None
            await output(f"[outpost] pulling {image}{f' (registry {auth.name})' if auth else ''}\n".encode())
            await self.docker.pull(image, auth=auth, progress=_lines(output))
            self._pulled.add(image)

    def _name(self, what: str) -> str:
        self._serial += 1
        return f"outpost-{_slug(self.build_id)[:12]}-{_slug(what)[:40]}-{self._serial}"


# --- helpers ---------------------------------------------------------------------------------------------


async def _remove_build(docker: Docker, build_id: str, network: str | None) -> None:
    for container in await docker.containers(f"{LABEL}={build_id}"):
        with contextlib.suppress(DockerError):
            await docker.remove(str(container["Id"]))
    if network is not None:
        with contextlib.suppress(DockerError):
            await docker.remove_network(network)


async def _pump(docker: Docker, container: str, output: Output) -> None:
    async for chunk in docker.output(container):
        await output(chunk)


_background: set[asyncio.Task[None]] = set()


def _detach(work: Awaitable[None]) -> None:
    """Streams a service's output until its container goes; the task ends with the container."""

    async def quietly() -> None:
        with contextlib.suppress(DockerError, httpx.HTTPError):
            await work

    task = asyncio.ensure_future(quietly())
    _background.add(task)
    task.add_done_callback(_background.discard)


def _prefixed(name: str, output: Output) -> Output:
    """Prefixes each line with `[name] `, holding a partial line until it is complete."""
    held = bytearray()
    label = f"[{name}] ".encode()

    async def write(chunk: bytes) -> None:
        held.extend(chunk)
        if b"\n" not in held:
            if len(held) > 65_536:  # no newline in sight: let it through
                await output(label + bytes(held))
                held.clear()
            return
        cut = held.rindex(b"\n") + 1
        lines = bytes(held[:cut]).splitlines(keepends=True)
        del held[:cut]
        await output(b"".join(label + line for line in lines))

    return write


async def _quiet(chunk: bytes) -> None:
    """Output nobody needs to read (a copy between two image stores)."""


async def build_with(builder: Docker | Buildah, job: ImageBuildJob, output: Output) -> str:
    """Builds what a `build` step asks for with the engine's classic builder or buildah; returns the image's id. The
    Docker executor and the Kubernetes executor's Docker-in-Docker daemon both build this way."""
    return await builder.build(
        job.context,
        dockerfile=job.dockerfile,
        dockerfile_content=job.dockerfile_content,
        tags=job.tags,
        build_args=job.build_args,
        target=job.target,
        no_cache=job.no_cache,
        auths=job.auths,
        output=output,
    )


async def tag_and_push(docker: Docker, image: str, target: str, auth: RegistryAuth | None, output: Output) -> str:
    """Tags `image` as `target` (no tag: latest) in the engine and pushes it to the target's registry, the engine's
    progress lines into the step's log; returns the digest the registry reported."""
    reference = images.ImageRef.parse(target)
    repository, tag = reference.repository, reference.tag or "latest"
    await docker.tag(image, repository, tag)
    return await docker.push(repository, tag, auth=auth, progress=_lines(output))


def _lines(output: Output) -> Callable[[str], Awaitable[None]]:
    async def progress(line: str) -> None:
        await output(f"{line}\n".encode())

    return progress


class _Tail:
    """Keeps the last line of a readiness check's output for the message when it fails."""

    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, chunk: bytes) -> None:
        self.data = (self.data + chunk)[-2048:]

    def last(self) -> str:
        lines = self.data.decode(errors="replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.") or "x"
