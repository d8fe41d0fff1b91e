"""A step's services and a composition's members as pods: services started in order and reached by name (each later
pod gets `hostAliases` to their pod IPs, no Service or DNS needed), readiness checks as pods of their own, candidates
run to their end; every service pod goes when the step ends."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from outpost.containers.auth import RegistryAuth
from outpost.errors import ExecutorError
from outpost.executors.base import CompositionJob, Output, Readiness, ServiceSpec
from outpost.executors.kubernetes.pods import PodRun, Prefixed, keep_copying, logins, quiet


class Pods(Protocol):
    """What the executor does with one pod (see KubernetesExecutor)."""

    async def start_pod(self, pod: PodRun) -> tuple[str, Path]: ...

    async def run_pod(self, pod: PodRun, output: Output) -> int: ...

    async def running_at(self, name: str, service: str) -> str: ...

    async def delete_and_wait(self, name: str) -> None: ...


@dataclass
class Started:
    """A service's pod, running until `stop_services`."""

    pod: str
    folder: Path
    copying: asyncio.Task[None]


async def compose(pods: Pods, job: CompositionJob, output: Output) -> int:
    """A composition: its services' pods in order, then its candidates' pods together; the first failing candidate's
    exit code, else 0. The services go whatever happened."""
    for spec in (*job.services, *job.candidates):
        if spec.mounts:
            raise ExecutorError(f"composition `volumes` are not supported on Kubernetes yet ({spec.name})")
    started: list[Started] = []
    try:
        aliases = await start_services(pods, job.services, job.auths, started, output, show_output=True)
        outputs = [Prefixed(c.name, output) for c in job.candidates]
        runs = [
            pods.run_pod(service_pod(c, job.auths, aliases), out)
            for c, out in zip(job.candidates, outputs, strict=True)
        ]
        codes = await asyncio.gather(*runs)
        for out in outputs:
            await out.flush()
        for candidate, code in zip(job.candidates, codes, strict=True):
            await output(f"[outpost] candidate {candidate.name} exited with code {code}\n".encode())
        return next((code for code in codes if code != 0), 0)
    finally:
        await asyncio.shield(stop_services(pods, started))


async def start_services(
    pods: Pods,
    services: Sequence[ServiceSpec],
    auths: Sequence[RegistryAuth],
    started: list[Started],
    output: Output,
    *,
    show_output: bool,
) -> dict[str, str]:
    """Starts each service's pod in order (into `started`, for `stop_services`), each reaching the earlier ones
    by name; returns name -> IP for what comes next. A composition's services (`show_output`) have their output in
    its log, prefixed; a step's keep theirs to themselves."""
    aliases: dict[str, str] = {}
    for service in services:
        if service.mounts:
            raise ExecutorError(f"service `volumes` are not supported on Kubernetes yet ({service.name})")
        name, folder = await pods.start_pod(service_pod(service, auths, aliases))
        sink = Prefixed(service.name, output if show_output else quiet)
        started.append(Started(name, folder, asyncio.create_task(keep_copying(folder / "output", sink))))
        aliases[service.name] = await pods.running_at(name, service.name)
        await output(
            f"[outpost] service {service.name} started ({service.image}) at {aliases[service.name]}\n".encode()
        )
    return aliases


async def stop_services(pods: Pods, started: list[Started]) -> None:
    for service in reversed(started):
        await pods.delete_and_wait(service.pod)
        service.copying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service.copying
        shutil.rmtree(service.folder, ignore_errors=True)


async def ready(
    pods: Pods, readiness: Readiness, auths: Sequence[RegistryAuth], aliases: Mapping[str, str], output: Output
) -> None:
    """`services.readiness`: its commands run in a pod of their own until they pass `success_threshold` times in
    a row, or fail `failure_threshold` times in a row (the step then errs)."""

    async def attempt() -> tuple[int, str]:
        probe = PodRun(step="readiness", image=readiness.image, script=readiness.script,
                       logins=logins(readiness.image, auths), aliases=dict(aliases))  # fmt: skip
        try:
            async with asyncio.timeout(readiness.timeout):
                return await pods.run_pod(probe, quiet), ""
        except (TimeoutError, ExecutorError):
            return -1, ""

    await readiness.wait(attempt, output)


def service_pod(spec: ServiceSpec, auths: Sequence[RegistryAuth], aliases: Mapping[str, str]) -> PodRun:
    argv = [*(spec.entrypoint or []), *(spec.command or [])]
    if not argv:
        raise ExecutorError(
            f"{spec.name}: give the composition service a `command` on Kubernetes (the pod's program is "
            "wrapped to keep its output on the build volume, so the image's own command is not known)"
        )
    return PodRun(step=spec.name, image=spec.image, script="exec " + shlex.join(argv) + "\n",
                env=dict(spec.environment), logins=logins(spec.image, auths), workdir=spec.working_dir,
                aliases=dict(aliases))  # fmt: skip
