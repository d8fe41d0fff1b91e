"""The privileged Docker-in-Docker opt-in (`--docker-in-docker`, off by default), for pipelines that need a Docker
engine (Codefresh compatibility): a build gets one privileged pod running `dockerd` from `--dind-image`, started
when its first step needs it and deleted when the build ends.

The daemon listens on a unix socket in the build volume, never on a network port: nothing else in the cluster can
reach it, and no port has to be free. `build` and `push` steps go through it with the same Docker API client as
the Docker executor (registry credentials in X-Registry-Auth / X-Registry-Config headers, never in a pod spec);
freestyle steps get DOCKER_HOST pointing at it. A socket on a volume only works between processes of one node, so
the opt-in needs every pod of the build on the runner's node (`--node-name`, the chart's ReadWriteOnce default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

from outpost.containers.dockerapi import Docker, DockerError
from outpost.errors import ExecutorError
from outpost.executors.base import VOLUME_IN_STEP, BuiltImage, ImageBuildJob, Output, PushJob
from outpost.executors.docker import build_with, tag_and_push
from outpost.executors.kubernetes import builder
from outpost.executors.kubernetes.pods import PodRun
from outpost.executors.kubernetes.services import Pods

STEP = "docker-in-docker"  # the pod's step label
FOLDER = ".outpost-steps/docker-in-docker"  # in the build volume (removed with the step folders): the socket
SOCKET = "docker.sock"
READY_POLL = 0.2  # seconds between tries of a starting daemon
_SUN_PATH = 100  # a unix socket's path must fit in 108 bytes: a longer one is reached through /proc/self/fd


def enabled(options: Mapping[str, str]) -> bool:
    return options.get("docker_in_docker", "").lower() in ("true", "1", "yes")


def check(options: Mapping[str, str]) -> None:
    """Refuses an opt-in that cannot work: no daemon image, or pods free to land on other nodes."""
    if not enabled(options):
        return
    if not options.get("dind_image"):
        raise ExecutorError("--docker-in-docker needs --dind-image: an image with dockerd in it")
    if not options.get("node"):
        raise ExecutorError(
            "--docker-in-docker needs --node-name: steps reach the daemon through a socket on the build volume, "
            "which works only between pods of one node (a ReadWriteOnce claim with the runner's node)"
        )


def daemon_script(group: int) -> str:
    """What the pod runs: dockerd with settings that work nested in a container (no iptables, no default bridge,
    the vfs storage driver, which needs no overlay support), its socket owned by the runner's group."""
    folder = f"{VOLUME_IN_STEP}/{FOLDER}"
    args = ["dockerd", "--host", f"unix://{folder}/{SOCKET}", "--group", str(group), "--log-level", "warn"]
    args += ["--storage-driver", "vfs", "--iptables=false", "--ip-masq=false", "--bridge=none"]
    args += ["--data-root", "/var/lib/docker", "--exec-root", "/var/run/docker"]
    quoted = " ".join(shlex.quote(a) for a in args)
    # docker:dind's `dind` wrapper, when the image has it, readies cgroup v2 nesting (a real cluster's nodes).
    wrapper = 'w=""; if command -v dind >/dev/null 2>&1; then w=dind; fi\n'
    socket = shlex.quote(f"{folder}/{SOCKET}")
    return f"set -e\nmkdir -p {shlex.quote(folder)}\nrm -f {socket}\n{wrapper}exec $w {quoted}\n"


class DockerInDocker:
    """One build's daemon: `client()` starts its pod the first time and returns a client of it; `stop()` deletes
    the pod."""

    in_step_host = f"unix://{VOLUME_IN_STEP}/{FOLDER}/{SOCKET}"  # DOCKER_HOST for the build's step pods

    def __init__(self, pods: Pods, volume: Path, build_id: str, options: Mapping[str, str], timeout: float) -> None:
        self.pods, self.volume, self.build_id, self.timeout = pods, volume, build_id, timeout
        self.image = str(options.get("dind_image"))
        self.scratch = options.get("scratch_registry", "")
        self._pod: tuple[str, Path] | None = None
        self._docker: Docker | None = None
        self._folder_fd: int | None = None
        self._starting = asyncio.Lock()
        self._serial = 0

    async def client(self, output: Output) -> Docker:
        async with self._starting:
            if self._docker is None:
                await output(
                    f"[outpost] starting the build's privileged Docker-in-Docker pod ({self.image})\n".encode()
                )
                try:
                    self._docker = await self._start()
                except BaseException:  # no half-started daemon stays for the next step to find
                    await asyncio.shield(self.stop())
                    raise
            return self._docker

    async def _start(self) -> Docker:
        script = daemon_script(os.getgid())
        (self.volume / FOLDER).mkdir(parents=True, exist_ok=True)  # the socket's folder, before the daemon makes it
        self._pod = await self.pods.start_pod(PodRun(step=STEP, image=self.image, script=script, privileged=True))
        name, folder = self._pod
        await self.pods.running_at(name, STEP)
        docker = Docker(self._host())
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.timeout
        try:
            while True:
                with contextlib.suppress(DockerError):
                    await docker.version()
                    return docker
                if (folder / "exit").exists() or loop.time() > give_up:
                    ended = "ended" if (folder / "exit").exists() else f"did not answer within {self.timeout:g}s"
                    raise ExecutorError(f"the Docker-in-Docker daemon {ended}: {_tail(folder / 'output')}")
                await asyncio.sleep(READY_POLL)
        except BaseException:
            await docker.aclose()
            raise

    def _host(self) -> str:
        """The socket as the runner reaches it; a path too long for a socket address goes through a descriptor of
        its folder."""
        folder = self.volume / FOLDER
        if len(str(folder / SOCKET)) <= _SUN_PATH:
            return f"unix://{folder / SOCKET}"
        self._folder_fd = os.open(folder, os.O_PATH)
        return f"unix:///proc/self/fd/{self._folder_fd}/{SOCKET}"

    async def stop(self) -> None:
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.aclose()
        if self._folder_fd is not None:
            os.close(self._folder_fd)
            self._folder_fd = None
        pod, self._pod = self._pod, None
        if pod is not None:
            try:
                await self.pods.delete_and_wait(pod[0])
            finally:
                shutil.rmtree(pod[1], ignore_errors=True)
                shutil.rmtree(self.volume / FOLDER, ignore_errors=True)

    async def build(self, job: ImageBuildJob, output: Output) -> BuiltImage:
        """Builds with the daemon's classic builder, as the Docker executor does; with a scratch registry the image
        also goes there, for later steps' pods to pull."""
        docker = await self.client(output)
        await output(f"[outpost] building with the build's Docker-in-Docker daemon ({self.image})\n".encode())
        image_id = await build_with(docker, job, output)
        reference = job.tags[0]
        if self.scratch:
            self._serial += 1
            reference = builder.scratch_reference(self.scratch, job.tags[0], self.build_id, self._serial)
            await output(f"[outpost] for the nodes: {reference}\n".encode())
            await tag_and_push(docker, image_id, reference, builder.for_domain(job.auths, reference), output)
        return BuiltImage(image_id=image_id, reference=reference, builder="docker")

    async def push(self, job: PushJob, output: Output) -> str:
        docker = await self.client(output)
        digest = ""
        for target in job.targets:
            await output(f"[outpost] pushing {target}\n".encode())
            digest = await tag_and_push(docker, job.image, target, job.auth, output)
        return digest


def _tail(path: Path, size: int = 2000) -> str:
    try:
        text = path.read_bytes()[-size:].decode(errors="replace").strip()
    except FileNotFoundError:
        return "(no output)"
    return text or "(no output)"
