"""Engine pods, as the runner sees them (`--engine-image`): each build's engine runs in a pod of its own, which
creates the build's step pods itself; the runner starts that pod, follows it, and removes it with what it made.

A build folder that holds ENGINE_MARKER has (or had) an engine pod: a runner that starts adopts it instead of
removing it with the rest of what an earlier run of it left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import PatchType

from outpost.errors import ExecutorError
from outpost.executors.kubernetes import api, claims, objects, placement

ENGINE_MARKER = "engine.json"  # in the build folder: the engine pod's name (written before the pod is created)
SERVICE_ACCOUNT = "outpost-engine"  # the chart's; --engine-service-account otherwise
DEADLINE = 24 * 3600  # seconds an engine pod may run (activeDeadlineSeconds): Outpost has no build timeout yet
DEADLINE_MARGIN = 300  # beyond `engine_deadline`: the engine's own timeouts act first
GRACE = 10  # seconds an engine pod gets between SIGTERM and SIGKILL
# The runner's settings an engine pod must not take as they are: its kubeconfig is a file of the runner's (the engine
# uses its own service account), and the engine settings are the runner's business.
RUNNER_ONLY = (
    "kubeconfig",
    "engine_image",
    "engine_pods",
    "engine_service_account",
    "engine_deadline",
    "volume_reuse",
    "volume_size",
    "volume_storage_class",
    "volume_retention",
    "volumes_per_pipeline",
)
VOLUME_IN_FOLDER = "volume"  # where a build volume's claim is mounted in the build folder (the engine's own path)


def pod_name(build_id: str) -> str:
    return objects.dns_label("outpost-engine", build_id[:40])


def adoptable(runner_folder: str | None) -> frozenset[str]:
    """The builds (as label values) whose engine pod a runner with this data folder started."""
    if not runner_folder:
        return frozenset()
    builds = Path(runner_folder) / "builds"
    return frozenset(
        objects.label_value(folder.name) for folder in builds.glob("*") if (folder / ENGINE_MARKER).is_file()
    )


def placement_of(options: Mapping[str, str]) -> placement.Placement:
    """The engine pods' `--engine-pods` settings; a node choice is refused with `--node-name` (a ReadWriteOnce claim
    pins the engine pod to the runner's node)."""
    where = placement.parse(options.get("engine_pods"), what="--engine-pods")
    if where.chooses_nodes and options.get("node"):
        raise ExecutorError(
            "--engine-pods chooses nodes (nodeSelector/affinity), but engine pods are pinned to the runner's node "
            "(--node-name, for a ReadWriteOnce claim)"
        )
    return where


def engine_options(options: Mapping[str, str], namespace: str, name: str) -> dict[str, str]:
    """The executor options the engine pod's executor runs with."""
    kept = {k: v for k, v in options.items() if k not in RUNNER_ONLY}
    return {**kept, "namespace": namespace, "engine_pod": name}


class EnginePods:
    """The runner's calls about one build's engine pod (its client is the runner's)."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.options = options
        self.config = api.config_of(options)
        self.namespace = api.namespace_of(options, self.config)
        self.mark = (
            objects.runner_mark(options.get("work_claim", ""), options["runner_folder"])
            if options.get("runner_folder")
            else None
        )
        self.client = AsyncClient(self.config, namespace=self.namespace, field_manager="outpost")

    async def close(self) -> None:
        await self.client.close()

    async def take_volume(
        self,
        account: str,
        pipeline: str,
        build_id: str,
        branch: str | None,
        ending: Callable[[str], bool] | None = None,
    ) -> claims.Claimed:
        """The build volume's claim (`claims.claim`): the pipeline's (or branch's), or a fresh one if it is held."""
        return await api.call(
            "take the build volume",
            lambda: claims.claim(
                self.client,
                self.namespace,
                pipeline,
                build_id,
                account=account,
                branch=branch,
                size=self.options.get("volume_size") or claims.DEFAULT_SIZE,
                storage_class=self.options.get("volume_storage_class") or None,
                runner=self.mark,
                ending=ending,
            ),
        )

    async def give_back(self, claimed: claims.Claimed, build_id: str) -> None:
        await api.call("give the build volume back", lambda: claims.give_back(self.client, self.namespace, claimed,
                                                                                build_id))  # fmt: skip

    async def launch(
        self, build_id: str, folder: Path, files: Mapping[str, str], volume_claim: str | None = None
    ) -> str:
        """Creates the engine pod and its Secret (a dependent of the pod); returns the pod's name. With
        `volume_claim` the pod mounts that claim as the build volume (the folder's `volume`)."""
        name = pod_name(build_id)
        where = placement_of(self.options)
        secret = objects.engine_secret(f"{name}-task", self.namespace, build_id, files, self.mark)
        deadline = int(float(self.options.get("engine_deadline", DEADLINE))) + DEADLINE_MARGIN
        spec = objects.EnginePodSpec(
            name=name,
            namespace=self.namespace,
            build_id=build_id,
            image=self.options["engine_image"],
            folder=str(folder),
            claim=self.options.get("work_claim", ""),
            claim_mount=self.options.get("work_root", ""),
            secret=api.name_of(secret),
            service_account=self.options.get("engine_service_account") or SERVICE_ACCOUNT,
            deadline_seconds=deadline,
            node_name=self.options.get("node") or None,
            node_selector=where.node_selector,
            tolerations=where.tolerations,
            affinity=where.affinity,
            requests=where.requests,
            limits=where.limits,
            run_as=(os.getuid(), os.getgid()),
            runner=self.mark,
            grace_seconds=GRACE,
            volume_claim=volume_claim,
            volume_path=str(folder / VOLUME_IN_FOLDER) if volume_claim else None,
        )
        made = await api.create(self.client, secret, "create the engine pod's Secret")
        try:
            created = await api.create(self.client, objects.engine_pod(spec), "create the engine pod")
            await api.call(
                "tie the engine's Secret to its pod",
                lambda: self.client.patch(
                    Secret, api.name_of(made), objects.owned_by(created), patch_type=PatchType.MERGE
                ),
            )
        except BaseException:
            await api.delete(self.client, Pod, name, 0)
            await api.delete(self.client, Secret, api.name_of(made), 0)
            raise
        return name

    def watch(self, name: str) -> api.PodWatch:
        return api.PodWatch(self.client, name, objects.ENGINE_CONTAINER)

    async def exists(self, name: str) -> bool:
        try:
            await api.call("read the engine pod", lambda: self.client.get(Pod, name))
        except ExecutorError as exc:
            if _not_found(exc):
                return False
            raise
        return True

    async def remove(self, build_id: str, name: str, *, node_lost: bool = False) -> None:
        """The engine pod (stopped within its grace period, and waited for: nothing of it writes to the build
        folder afterwards), its Secret, and the build's step pods and their Secrets. On a lost node, whose kubelet
        would never finish a graceful deletion, the pod's API object is removed at once, and so are those of the
        step pods on that node (with a ReadWriteOnce claim, all of them)."""
        lost_node = await self._node_of(name) if node_lost else ""
        await api.delete(self.client, Pod, name, 0 if node_lost else GRACE)
        if not node_lost and not await api.gone(self.client, name, GRACE + api.KUBELET_SLACK):
            await api.delete(self.client, Pod, name, 0)  # a lost node's: its API object goes
        await api.delete(self.client, Secret, f"{name}-task", 0)
        await api.remove_build(self.client, self.namespace, build_id, lost_node)

    async def _node_of(self, name: str) -> str:
        try:
            pod = await api.call("read the engine pod", lambda: self.client.get(Pod, name))
        except ExecutorError:
            return ""
        return str(pod.spec.nodeName or "") if pod.spec else ""


def _not_found(exc: ExecutorError) -> bool:
    cause: Any = exc.__cause__
    return cause is not None and getattr(getattr(cause, "status", None), "code", None) == 404
