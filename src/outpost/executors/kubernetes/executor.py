"""The Kubernetes executor: each freestyle step attempt runs in a step pod of its own, in the build namespace; build
and push steps run buildah in builder pods (`builder`), or, opted in, go through a privileged Docker-in-Docker pod
(`dind`); a composition's services and candidates are pods too.

This slice runs the engine in the runner process. The runner's data folder lives on a PersistentVolumeClaim (the
"work claim", e.g. the runner StatefulSet's volume): step pods mount the build's folder of that same claim (a subPath)
at /codefresh/volume, so what the engine checked out is what the step sees. A small wrapper in the pod runs the
step's script with its output going to a file on that volume and its exit code to another; the runner reads the
output file by byte offset, so every byte reaches the step's log exactly once whatever the kubelet does with its own
logs, and the step's last words are read after its container has ended. The pod's status is followed with a watch
(resumed after any cut) and judged by `podstate`: an unpullable image, an unschedulable pod, OOMKilled, eviction, a
deadline or a pod deleted from outside end the step with the reason in its log, never as a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from outpost.containers.auth import RegistryAuth
from outpost.errors import ExecutorError
from outpost.executors.base import (
    VOLUME_IN_STEP,
    BuiltImage,
    CompositionJob,
    Executor,
    ImageBuildJob,
    Output,
    PushJob,
    StepJob,
)

try:
    import httpx2
    from lightkube import ApiError, AsyncClient, Client
    from lightkube.resources.core_v1 import Event, PersistentVolumeClaim, Pod, Secret
    from lightkube.types import PatchType
except ImportError as exc:  # pragma: no cover - the optional dependency is missing
    raise ExecutorError(
        f"the Kubernetes executor needs lightkube ({exc}): pip install 'outpost-ci[kubernetes]'"
    ) from None

from outpost.executors.kubernetes import api, builder, dind, engines, objects, placement, services
from outpost.executors.kubernetes.api import KUBELET_SLACK, POLL, STOP_GRACE
from outpost.executors.kubernetes.pods import (
    MASKED_FILE,
    PodRun,
    copy_output,
    logins,
    note_copied,
    quiet,
    shown_of,
)
from outpost.runner import sealing

TOOLS_IN_STEP = "/codefresh/outpost/bin"  # cf_export, as in the Docker executor
STEPS_FOLDER = ".outpost-steps"  # in the build volume: what steps of the build share (buildah's storage, dind's socket)
# In the engine's scratch folder, on the work claim: each step pod's own folder (its script, output and exit code),
# mounted in that pod alone at STEP_IN_STEP. On the work claim, not the build volume, so that the runner can read what
# a step printed after its engine pod died (a build volume with a claim of its own is not mounted in the runner).
STEPS_IN_SCRATCH = "steps"
STEP_IN_STEP = "/codefresh/outpost/step"
DEFAULTS = {"pull_timeout": "30", "pending_timeout": "120", "node_lost_timeout": "60"}


class KubernetesExecutor(Executor):
    name: ClassVar[str] = "kubernetes"
    # A container executor (the engine fills in working_directory, volumes and services). Build and push steps run
    # buildah in builder pods; a composition's services and candidates are pods of their own.
    step_types: ClassVar[frozenset[str]] = frozenset({"freestyle", "build", "push", "composition"})
    takes_kubeconfig: ClassVar[bool] = True  # through the step's env Secret (`_with_kubeconfig`)

    def __init__(
        self, volume: Path, scratch: Path, *, build_id: str = "", options: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(volume, scratch, build_id=build_id, options={**DEFAULTS, **(options or {})})
        self._config = api.config_of(self.options) if self.options.get("work_claim") else None
        self.namespace = api.namespace_of(self.options, self._config)
        self.claim = self.options.get("work_claim", "")
        self.work_root = Path(self.options.get("work_root", "")).resolve()
        self.pull_timeout = float(self.options["pull_timeout"])
        self.pending_timeout = float(self.options["pending_timeout"])
        self.node_lost_timeout = float(self.options["node_lost_timeout"])
        self.placement = _placement(self.options)
        self.mark = _mark(self.options)
        self._lost: set[str] = set()  # pods on a lost node: force-deleted, no grace period to wait for
        self._client: AsyncClient | None = None
        self._owner: tuple[str, str] | None = None  # in an engine pod: (its name, its uid), owner of the step pods
        # In an engine pod with a build volume claim (`--volume-reuse pipeline|branch`): step pods mount that claim
        # whole, and follow the engine pod's node (the claim is ReadWriteOnce) unless --node-name pins them all.
        self.volume_claim = self.options.get("volume_claim", "")
        self._node = self.options.get("node") or None
        self._serial = 0
        # In an engine pod: the build's job token, the key its step pods' masked values are sealed under (MASKED_FILE),
        # so that the runner, which keeps that token sealed in the outbox's lease, can finish their logs.
        self.last_words_key = ""
        dind.check(self.options)
        self.dind = (
            dind.DockerInDocker(self, volume, build_id, self.options, self.pending_timeout)
            if dind.enabled(self.options)
            else None
        )

    @classmethod
    async def preflight(cls, options: Mapping[str, str]) -> str | None:
        merged = {**DEFAULTS, **options}
        claim = merged.get("work_claim", "")
        if not claim:
            raise ExecutorError("the Kubernetes executor needs --work-claim: the claim that holds the runner's folder")
        where = _placement(merged)
        if merged.get("engine_image") and merged.get("volume_reuse", "none") != "none" and where.chooses_nodes:
            raise ExecutorError(
                "--step-pods chooses nodes (nodeSelector/affinity), but with build volume claims "
                "(--volume-reuse pipeline|branch) step pods follow their engine pod's node, where the "
                "ReadWriteOnce claim is attached: choose nodes with --engine-pods instead"
            )
        dind.check(merged)
        config = api.config_of(merged)
        namespace = api.namespace_of(merged, config)
        async with AsyncClient(config, namespace=namespace, field_manager="outpost") as client:
            await api.call(f"read the work claim {claim}", lambda: client.get(PersistentVolumeClaim, claim))
            # The builds whose engine pod an earlier run of this runner started: adopted, not removed.
            keep = engines.adoptable(merged.get("runner_folder"))
            left = await api.remove_marked(client, namespace, _mark(merged), keep)
        said = f"Kubernetes API at {config.cluster.server}, namespace {namespace}, work claim {claim}"
        if left:
            said += f"; removed {left} pod(s) an earlier run of this runner left"
        if merged.get("engine_image"):
            engines.placement_of(merged)  # refused now, not at the first build
            said += f"; engine pods: {merged['engine_image']}"
            if keep:
                said += f" ({len(keep)} build(s) to adopt)"
        if where != placement.Placement():
            said += f"; step pods: {_describe(where)}"
        return said

    def volume_in_step(self) -> str:
        return VOLUME_IN_STEP

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise ExecutorError("the Kubernetes executor is used outside `async with`")
        return self._client

    async def __aenter__(self) -> Self:
        if not self.claim or self._config is None:
            raise ExecutorError("the Kubernetes executor needs a work claim (--work-claim)")
        self._client = AsyncClient(self._config, namespace=self.namespace, field_manager="outpost")
        if owner := self.options.get("engine_pod"):  # in an engine pod: the step pods are its dependents
            try:
                found = await api.call("read the engine pod", lambda: self.client.get(Pod, owner))
            except BaseException:
                await self._client.close()
                self._client = None
                raise
            assert found.metadata is not None
            self._owner = (owner, str(found.metadata.uid))
            if self.volume_claim and self._node is None and found.spec is not None:
                self._node = found.spec.nodeName or None
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.dind is not None and self._client is not None:
            with contextlib.suppress(ExecutorError):  # its pod goes with the build's pods below anyway
                await asyncio.shield(self.dind.stop())
        if self._client is not None and (self.volume / builder.STORAGE).exists():
            await asyncio.shield(self._remove_image_storage())
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.shield(api.remove_build(client, self.namespace, self.build_id))
        finally:
            await client.close()
            shutil.rmtree(self.volume / STEPS_FOLDER, ignore_errors=True)

    async def _remove_image_storage(self) -> None:
        """The builder pods' storage goes with the build. Its files belong to the builders' root, which a runner
        running as another user (the chart's) cannot remove: a last builder pod does it."""
        script = f"rm -rf {VOLUME_IN_STEP}/{builder.STORAGE}\n"
        clean = PodRun(step="cleanup", image=self._builder_image(), script=script, builder=True)
        with contextlib.suppress(ExecutorError):
            await self.run_pod(clean, quiet)

    @classmethod
    def after_crash(cls, volume: Path, scratch: Path, build_id: str, options: Mapping[str, str] | None = None) -> None:
        """Deletes the pods and secrets a crashed runner left for this build (the step pods stop with it)."""
        merged = {**DEFAULTS, **(options or {})}
        selector: dict[str, Any] = dict(objects.build_selector(build_id))
        config = api.config_of(merged)
        namespace = api.namespace_of(merged, config)
        try:
            with Client(config, namespace=namespace) as client:
                for kind in (Pod, Secret):
                    for found in client.list(kind, labels=selector, namespace=namespace):
                        client.delete(kind, api.name_of(found), grace_period=0)
        except (ApiError, httpx2.HTTPError) as exc:
            raise ExecutorError(f"cannot remove the pods of build {build_id}: {exc}") from exc
        shutil.rmtree(volume / STEPS_FOLDER, ignore_errors=True)

    # --- freestyle steps -----------------------------------------------------------------------------

    async def run(self, job: StepJob, output: Output) -> int:
        _refuse_what_is_not_built_yet(job)
        assert job.image
        env = {k: v for k, v in job.env.items() if k not in job.host_env}
        script = f'PATH="$PATH:{TOOLS_IN_STEP}"\n' + job.script
        if job.kubeconfig is not None:
            env, script = _with_kubeconfig(job.kubeconfig, env, script)
        if self.dind is not None:  # `docker` commands in the step use the build's daemon
            await self.dind.client(output)
            env["DOCKER_HOST"] = self.dind.in_step_host
        started: list[services.Started] = []
        try:
            aliases = await services.start_services(self, job.services, job.auths, started, output, show_output=False)
            if job.readiness is not None:
                await services.ready(self, job.readiness, job.auths, aliases, output)
            return await self.run_pod(
                PodRun(
                    step=job.step,
                    image=job.image,
                    script=script,
                    env=env,
                    logins=logins(job.image, job.auths),
                    shell="/bin/sh" if job.shell == "sh" else job.shell,
                    workdir=job.workdir_in_step,
                    aliases=aliases,
                ),
                output,
            )
        finally:
            await asyncio.shield(services.stop_services(self, started))

    async def run_pod(self, pod: PodRun, output: Output) -> int:
        """Runs one pod to its end: its output into `output`, its exit code returned; over only when it is gone."""
        if (stream := getattr(output, "stream", None)) is not None:  # a step's masked log (reporting.MaskedOutput)
            pod = dataclasses.replace(pod, stream=str(stream), masked=frozenset(getattr(output, "secrets", ())))
        name, folder = await self.start_pod(pod)
        try:
            code = await self._follow(name, folder, pod, output)
            keep = pod.keep if pod.keep is not None else {}
            for kept in ("iid", "digest"):
                with contextlib.suppress(FileNotFoundError):
                    keep[kept] = (folder / kept).read_text().strip()
            return code
        finally:
            # The step is over only when its pod is gone (cancelled: after its grace period). Its raw output (not
            # masked: masking happens in `output`) does not stay on the volume for later steps to read.
            await asyncio.shield(self.delete_and_wait(name))
            shutil.rmtree(folder, ignore_errors=True)

    async def start_pod(self, pod: PodRun) -> tuple[str, Path]:
        """Creates the pod (its script in its folder, its environment and pull credentials in Secrets it owns)."""
        self._serial += 1
        name = objects.dns_label("op", self.build_id[:28], str(self._serial), pod.step[:20])
        folder = self.scratch / STEPS_IN_SCRATCH / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "script").write_text(pod.script)
        if pod.stream is not None and self.last_words_key:  # before the pod can print
            sealed = sealing.seal(json.dumps(sorted(pod.masked)), self.last_words_key, name)
            (folder / MASKED_FILE).write_text(sealed)
            note_copied(folder, pod.stream, 0)
        build, mark = self.build_id, self.mark
        secrets = [objects.env_secret(name, self.namespace, build, pod.step, pod.env, mark)]
        if pod.logins:
            secrets.append(objects.pull_secret(f"{name}-pull", self.namespace, build, pod.step, pod.logins, mark))
        spec = self._pod_spec(pod, name)
        spec.pull_secrets = [f"{name}-pull"] if pod.logins else []
        made: list[str] = []
        try:
            for secret in secrets:
                await api.create(self.client, secret, f"create the secrets of step {pod.step}")
                made.append(api.name_of(secret))
            created = await api.create(self.client, objects.step_pod(spec), f"create the pod of step {pod.step}")
            for secret_name in made:  # from now on, Kubernetes deletes them with the pod
                await api.call(
                    f"tie the secrets of step {pod.step} to its pod",
                    lambda n=secret_name: self.client.patch(  # type: ignore[misc]
                        Secret, n, objects.owned_by(created), patch_type=PatchType.MERGE
                    ),
                )
        except BaseException:
            await asyncio.shield(api.delete(self.client, Pod, name, 0))
            for secret_name in made:
                await asyncio.shield(api.delete(self.client, Secret, secret_name, 0))
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return name, folder

    def _pod_spec(self, pod: PodRun, name: str) -> objects.StepPodSpec:
        inner = STEP_IN_STEP
        # The output file is opened once and appended to; the exit code is written last, by a rename.
        wrapper = (
            f"d={shlex.quote(inner)}\n"
            f'{shlex.quote(pod.shell)} "$d/script" >>"$d/output" 2>&1 </dev/null\n'
            'code=$?\necho "$code" >"$d/exit.part" && mv "$d/exit.part" "$d/exit"\nexit "$code"\n'
        )
        tools = self.scratch / "bin"
        where = self.placement
        return objects.StepPodSpec(
            name=name,
            namespace=self.namespace,
            build_id=self.build_id,
            step=pod.step,
            image=pod.image,
            command=["/bin/sh", "-c", wrapper],
            claim=self.volume_claim or self.claim,
            volume_path="" if self.volume_claim else self._in_claim(self.volume),
            volume_mount=VOLUME_IN_STEP,
            env_secret=name,
            workdir=pod.workdir,
            tools_path=self._in_claim(tools) if tools.is_dir() else None,
            tools_mount=TOOLS_IN_STEP,
            tools_claim=self.claim if self.volume_claim else None,
            step_path=self._in_claim(self.scratch / STEPS_IN_SCRATCH / name),
            step_mount=STEP_IN_STEP,
            node_name=self._node,
            node_selector=where.node_selector,
            tolerations=where.tolerations,
            affinity=where.affinity,
            requests=where.requests,
            limits=where.limits,
            grace_seconds=STOP_GRACE,
            security=objects.dind_security()
            if pod.privileged
            else objects.builder_security(self.options.get("builder_seccomp", "Unconfined"))
            if pod.builder
            else None,
            host_users=False if pod.builder and self.options.get("builder_userns", "true") == "true" else None,
            host_aliases=pod.aliases,
            runner=self.mark,
            owner=self._owner,
        )

    # --- build and push steps: buildah in builder pods ---------------------------------------------------

    def _builder_image(self) -> str:
        image = self.options.get("builder_image", "")
        if not image:
            raise ExecutorError(
                "build and push steps on Kubernetes need --builder-image: an image with buildah in it "
                "(they run in an unprivileged builder pod; privileged Docker-in-Docker only with --docker-in-docker)"
            )
        return image

    async def build_image(self, job: ImageBuildJob, output: Output) -> BuiltImage:
        if self.dind is not None:
            return await self.dind.build(job, output)
        image = self._builder_image()
        self._serial += 1
        scratch = builder.scratch_reference(self.options.get("scratch_registry", ""), job.tags[0], self.build_id,
                                            self._serial)  # fmt: skip
        auths = list(job.auths)
        target = builder.for_domain(auths, scratch)
        context = self._in_volume(job.context)
        dockerfile = f"{context}/{job.dockerfile}"
        if job.dockerfile_content is not None:  # an inline Dockerfile: written beside the step's script
            inline = self.volume / STEPS_FOLDER / f"dockerfile-{self._serial}"
            inline.parent.mkdir(parents=True, exist_ok=True)
            inline.write_text(job.dockerfile_content)
            dockerfile = self._in_volume(inline)
        script = builder.build_script(
            job,
            context=context,
            dockerfile=dockerfile,
            volume=VOLUME_IN_STEP,
            scratch=scratch,
            insecure=bool(target and target.insecure),
        )
        await output(f"[outpost] building in a builder pod with buildah ({image}); for the nodes: {scratch}\n".encode())
        found: dict[str, str] = {}
        code = await self.run_pod(self._builder_pod(job.step, image, script, auths, keep=found), output)
        if code != 0:
            raise ExecutorError(f"the image build failed (buildah exited with code {code})")
        image_id = found.get("iid", "")
        return BuiltImage(image_id if image_id.startswith("sha256:") else f"sha256:{image_id}", scratch, "buildah")

    async def push_image(self, job: PushJob, output: Output) -> str:
        if self.dind is not None:
            return await self.dind.push(job, output)
        image = self._builder_image()
        auths = [job.auth] if job.auth else []
        insecure = bool(job.auth and job.auth.insecure)
        script = builder.push_script(job.image, job.targets, volume=VOLUME_IN_STEP, insecure=insecure)
        found: dict[str, str] = {}
        code = await self.run_pod(self._builder_pod(job.step, image, script, auths, keep=found), output)
        if code != 0:
            raise ExecutorError(f"the push failed (buildah exited with code {code})")
        return found.get("digest", "")

    def _builder_pod(
        self, step: str, image: str, script: str, auths: Sequence[RegistryAuth], *, keep: dict[str, str]
    ) -> PodRun:
        env = {builder.AUTH_ENV: builder.auth_file(auths), builder.CONF_ENV: builder.registries_conf(auths)}
        return PodRun(step=step, image=image, script=script, env=env, logins=logins(image, auths), builder=True,
                    keep=keep)  # fmt: skip

    def _in_volume(self, path: Path) -> str:
        """`path` (in the build volume on the runner) as pods see it."""
        try:
            inside = path.resolve().relative_to(self.volume.resolve())
        except ValueError:
            raise ExecutorError(f"{path} is not inside the build volume") from None
        return f"{VOLUME_IN_STEP}/{inside}".rstrip("/.") if str(inside) != "." else VOLUME_IN_STEP

    # --- compositions and services (`services`) ---------------------------------------------------------

    async def compose(self, job: CompositionJob, output: Output) -> int:
        return await services.compose(self, job, output)

    async def running_at(self, name: str, service: str) -> str:
        """The IP of a service's pod once it runs (its reading's failure, if any, is the composition's error)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.pending_timeout
        async with api.PodWatch(self.client, name) as watch:
            while loop.time() < give_up:
                reading = watch.reading
                if watch.gone:
                    raise ExecutorError(f"the pod of service {service} ({name}) was deleted from outside")
                if reading is not None:
                    if why := reading.failure():
                        raise ExecutorError(f"service {service}: {why}")
                    if reading.phase in ("Succeeded", "Failed"):
                        raise ExecutorError(f"service {service} ended before the candidates ran")
                    if reading.phase == "Running":
                        pod = await api.call(f"read the pod of service {service}", lambda: self.client.get(Pod, name))
                        if pod.status is not None and pod.status.podIP:
                            return str(pod.status.podIP)
                await watch.changed(POLL)
        raise ExecutorError(f"service {service} did not start within {self.pending_timeout:g}s")

    def _in_claim(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.work_root))
        except ValueError:
            raise ExecutorError(f"{path} is not inside the work claim's folder {self.work_root}") from None

    async def _follow(self, name: str, folder: Path, pod: PodRun, output: Output) -> int:
        """Copies the output file into `output` until the pod's status gives a verdict."""
        step, image = pod.step, pod.image
        loop = asyncio.get_running_loop()
        began, pull_failing_since, silent_since = loop.time(), None, None
        offset = 0

        def noted(at: int) -> None:  # for the runner, should this engine die (supervisor._copy_last_words)
            note_copied(folder, str(pod.stream), shown_of(output, at))

        recording = noted if pod.stream is not None and self.last_words_key else None

        async def copy() -> None:
            nonlocal offset
            offset = await copy_output(folder / "output", offset, output, recording)

        async with api.PodWatch(self.client, name) as watch:
            while True:
                await copy()
                reading = watch.reading
                if watch.gone or (reading is not None and reading.deleting):
                    await copy()
                    return await _fail(output, f"the pod of step {step} ({name}) was deleted from outside")
                if reading is not None:
                    if reading.exit_code is not None or reading.phase in ("Succeeded", "Failed"):
                        await copy()
                        if why := reading.failure():
                            return await _fail(output, why)
                        assert reading.exit_code is not None
                        return reading.exit_code
                    silent_since = (silent_since or loop.time()) if reading.not_ready else None
                    if silent_since is not None and loop.time() - silent_since >= self.node_lost_timeout:
                        self._lost.add(name)
                        await copy()
                        return await _fail(
                            output,
                            f"the node {reading.node} running step {step} stopped answering "
                            f"for {self.node_lost_timeout:g}s (node lost); its pod is force-deleted",
                        )
                    if reading.hopeless:
                        return await _fail(
                            output, f"image {image}: {reading.waiting_message or reading.waiting_reason}"
                        )
                    if reading.pull_failing:
                        pull_failing_since = pull_failing_since or loop.time()
                        if loop.time() - pull_failing_since >= self.pull_timeout:
                            return await _fail(
                                output,
                                f"image {image} could not be pulled for {self.pull_timeout:g}s "
                                f"({reading.waiting_reason}: {reading.waiting_message})",
                            )
                    if reading.unschedulable and loop.time() - began >= self.pending_timeout:
                        events = await self._warnings(name)
                        return await _fail(
                            output,
                            f"no node could take the pod of step {step} within {self.pending_timeout:g}s: "
                            f"{reading.unschedulable}" + "".join(f"\n  {e}" for e in events),
                        )
                    stuck = reading.phase == "Pending" and not reading.pull_failing and not reading.unschedulable
                    if stuck and loop.time() - began >= self.pending_timeout:
                        events = await self._warnings(name)
                        waiting = (
                            f" ({reading.waiting_reason}: {reading.waiting_message})" if reading.waiting_reason else ""
                        )
                        return await _fail(
                            output,
                            f"the pod of step {step} did not start within {self.pending_timeout:g}s{waiting}"
                            + "".join(f"\n  {e}" for e in events),
                        )
                await watch.changed(POLL)

    async def _warnings(self, name: str) -> list[str]:
        """The pod's warning events, for the step's log."""
        fields: dict[str, Any] = {"involvedObject.name": name, "type": "Warning"}
        with contextlib.suppress(ExecutorError):
            found = await api.call(
                "list the pod's events",
                lambda: api.collect(self.client.list(Event, fields=fields, namespace=self.namespace)),
            )
            return [f"{e.reason}: {e.message}" for e in found]
        return []

    async def delete_and_wait(self, name: str) -> None:
        """Deletes the pod with a grace period and waits until it is gone. A pod whose kubelet does not finish
        the deletion (a lost node) is force-deleted: its API object goes, whatever still runs on that node."""
        if name in self._lost:
            await api.delete(self.client, Pod, name, 0)
            return
        await api.delete(self.client, Pod, name, STOP_GRACE)
        if await api.gone(self.client, name, STOP_GRACE + KUBELET_SLACK):
            return
        await api.delete(self.client, Pod, name, 0)
        if not await api.gone(self.client, name, KUBELET_SLACK):
            raise ExecutorError(f"the pod {name} was deleted but is still there after {KUBELET_SLACK:g}s")


async def _fail(output: Output, reason: str) -> int:
    await output(f"\n[outpost] {reason}\n".encode())
    raise ExecutorError(reason)


# The build's kubeconfig travels in the step's env Secret (as its secret variables do); the pod's shell writes it to
# a 0600 file of the pod's own (its /tmp, else /dev/shm), never to the build volume, gone with the pod.
KUBECONFIG_VARIABLE = "OUTPOST_KUBECONFIG_CONTENT"
KUBECONFIG_PROLOGUE = (
    'd="${TMPDIR:-/tmp}"; { [ -d "$d" ] && [ -w "$d" ]; } || d=/dev/shm\n'
    f'KUBECONFIG="$d/outpost-kubeconfig"; (umask 077; printf "%s\\n" "${KUBECONFIG_VARIABLE}" >"$KUBECONFIG")\n'
    f"export KUBECONFIG; unset {KUBECONFIG_VARIABLE}\n"
)


def _with_kubeconfig(path: Path, env: Mapping[str, str], script: str) -> tuple[dict[str, str], str]:
    return {**env, KUBECONFIG_VARIABLE: path.read_text()}, KUBECONFIG_PROLOGUE + script


def _refuse_what_is_not_built_yet(job: StepJob) -> None:
    if not job.image:
        raise ExecutorError("a freestyle step needs an `image` on the Kubernetes executor")
    missing = [
        what
        for what, present in (
            ("`cmd`/`entrypoint` (the image's own program)", job.cmd is not None or job.entrypoint is not None),
            ("`volumes`", bool(job.mounts)),
        )
        if present
    ]
    if missing:
        raise ExecutorError(f"not yet supported by the Kubernetes executor: {', '.join(missing)}")


def _mark(options: Mapping[str, str]) -> str | None:
    """The label of this runner's pods (None when the runner did not say which folder is its own)."""
    folder = options.get("runner_folder")
    return objects.runner_mark(options.get("work_claim", ""), folder) if folder else None


def _placement(options: Mapping[str, str]) -> placement.Placement:
    """The step pods' settings; a node choice is refused for pods pinned to the runner's node (--node-name, for a
    ReadWriteOnce claim): the kubelet would reject every pod whose node does not match it."""
    where = placement.parse(options.get("step_pods"))
    if where.chooses_nodes and options.get("node"):
        raise ExecutorError(
            "--step-pods chooses nodes (nodeSelector/affinity), but step pods are pinned to the runner's node "
            "(--node-name, for a ReadWriteOnce claim): place the runner there instead, or use a ReadWriteMany claim"
        )
    return where


def _describe(where: placement.Placement) -> str:
    parts = [f"nodeSelector {dict(where.node_selector)}"] if where.node_selector else []
    parts += [f"{len(where.tolerations)} toleration(s)"] if where.tolerations else []
    parts += ["affinity"] if where.affinity else []
    parts += [f"requests {dict(where.requests)}"] if where.requests else []
    parts += [f"limits {dict(where.limits)}"] if where.limits else []
    return ", ".join(parts)
