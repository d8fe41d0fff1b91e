"""A fake kubelet: runs the containers of the pods bound to its node on the tests' real Docker engine and writes
their status back through the API (with lightkube, as any client would).

Real processes, exit codes and signals: a deleted pod's containers get SIGTERM and, after the pod's grace period,
SIGKILL; a memory limit is the container's cgroup limit, so a step that passes it is OOMKilled by the kernel; an image
the engine does not have is pulled (with the pod's imagePullSecrets) and one that cannot be pulled shows
ErrImagePull, then ImagePullBackOff, with Warning events. Volumes are host folders: a claim is one folder per
(namespace, claim) under the cluster's storage folder, shared by every pod that mounts it (all fake nodes are on
this one host), and an emptyDir is a folder per pod. A privileged container is privileged on the engine. Pods share
the host's network (no pod network is emulated). One container per pod; restartPolicy is taken as Never.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.config.kubeconfig import SingleConfig
from lightkube.resources.core_v1 import Event, Node, PersistentVolumeClaim, Pod, Secret
from lightkube.types import PatchType

from tests.kube.apiserver import now

_IMAGE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
HEARTBEAT = 0.5  # seconds between the node's status updates (the real kubelet: 10 s, or a Lease)
PULL_BACKOFF = 2.0  # seconds between pull attempts (the real kubelet doubles from 10 s)
LABEL = "io.outpost.kube.node"
PRIVILEGED_RUNTIME = "outpost-privileged"  # tests.containers.Dockerd's runtime for privileged containers
T = TypeVar("T")


def _report(task: asyncio.Task[None]) -> None:
    """A pod's task that died of a bug in the fake kubelet says so in the test's log."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("tests.kube").error("fake kubelet: a pod's task failed", exc_info=task.exception())


def memory_bytes(quantity: str) -> int:
    found = re.fullmatch(r"(\d+)([kMG]i?|)", quantity)
    if not found:
        raise ValueError(f"unsupported quantity {quantity!r}")
    return int(found[1]) * _UNITS[found[2]]


def cpu_nanos(quantity: str) -> int:
    """A CPU quantity (2, 0.5, 500m) in billionths of a CPU."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", quantity)
    if not found:
        raise ValueError(f"unsupported quantity {quantity!r}")
    return round(float(found[1]) * (1_000_000 if found[2] else 1_000_000_000))


def _security(pod: Any, container: Any) -> dict[str, Any]:
    """The container's security settings as the engine takes them: the user, capabilities, no_new_privs, privileged
    and the seccomp profile (RuntimeDefault is the engine's default profile; Unconfined none). hostUsers: false cannot
    be given per container here (the engine's user namespaces are daemon-wide): a real cluster's runtime does that."""
    context, pod_context = container.securityContext, pod.securityContext
    options: list[str] = []
    settings: dict[str, Any] = {}
    seccomp = (context.seccompProfile if context else None) or (pod_context.seccompProfile if pod_context else None)
    if seccomp is not None and seccomp.type == "Unconfined":
        options.append("seccomp=unconfined")
    if context is not None and context.allowPrivilegeEscalation is False:
        options.append("no-new-privileges")
    if context is not None and context.capabilities is not None:
        settings["CapDrop"] = list(context.capabilities.drop or [])
        settings["CapAdd"] = list(context.capabilities.add or [])
    if options:
        settings["SecurityOpt"] = options
    if context is not None and context.privileged:
        settings["Privileged"] = True
    return settings


class Docker:
    """The few calls of the Docker engine API a kubelet needs."""

    def __init__(self, socket: str) -> None:
        transport = httpx.AsyncHTTPTransport(uds=socket)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://docker/v1.41", timeout=None)

    async def has_image(self, ref: str) -> bool:
        return (await self.http.get(f"/images/{ref}/json")).status_code == 200

    async def pull(self, ref: str, auth: dict[str, str] | None) -> str | None:
        """None when pulled, else the engine's error."""
        name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        headers = {"X-Registry-Auth": base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()} if auth else {}
        async with self.http.stream(
            "POST", "/images/create", params={"fromImage": name, "tag": tag}, headers=headers
        ) as answer:
            body = (await answer.aread()).decode(errors="replace")
        if answer.status_code >= 400:
            return json.loads(body).get("message", body) if body.startswith("{") else body
        for line in body.splitlines():
            if '"error"' in line:
                return str(json.loads(line).get("error"))
        return None

    async def run(self, body: dict[str, Any]) -> str:
        await self._privileged_runtime(body["HostConfig"])
        answer = await self.http.post("/containers/create", json=body)
        answer.raise_for_status()
        container = str(answer.json()["Id"])
        (await self.http.post(f"/containers/{container}/start")).raise_for_status()
        return container

    async def _privileged_runtime(self, host_config: dict[str, Any]) -> None:
        """A privileged container runs with the engine's `outpost-privileged` runtime when it has one: runc cut to
        this machine's capability bounding set, as a real cluster's runtime gives a privileged container the
        capabilities it has itself (tests/kube/runc_privileged.py says why the engine alone cannot)."""
        if host_config.get("Privileged"):
            runtimes = (await self.http.get("/info")).json().get("Runtimes") or {}
            if PRIVILEGED_RUNTIME in runtimes:
                host_config["Runtime"] = PRIVILEGED_RUNTIME

    async def wait(self, container: str) -> dict[str, Any]:
        await self.http.post(f"/containers/{container}/wait")
        state: dict[str, Any] = (await self.http.get(f"/containers/{container}/json")).json()["State"]
        return state

    async def stop(self, container: str, grace: int) -> None:
        await self.http.post(f"/containers/{container}/stop", params={"t": grace}, timeout=grace + 30)

    async def remove(self, container: str) -> None:
        await self.http.delete(f"/containers/{container}", params={"force": "1"})

    async def remove_all(self, node: str) -> None:
        found = json.dumps({"label": [f"{LABEL}={node}"]})
        for c in (await self.http.get("/containers/json", params={"all": "1", "filters": found})).json():
            await self.remove(c["Id"])


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """A kubelet retries its API calls on throttling, server errors and lost connections, as the real one does."""
    pause = 0.1
    for _ in range(40):
        try:
            return await call()
        except ApiError as exc:
            if exc.status.code not in (429, 500, 502, 503, 504):
                raise
        except httpx2.TransportError:
            pass
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
    return await call()


SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ApiService:
    """How pods reach the API server in-cluster: the `kubernetes` Service's address (KUBERNETES_SERVICE_HOST/PORT,
    over TLS), the CA that signed its certificate, and each service account's token (namespace, name) -> token."""

    host: str
    port: int
    ca: Path
    tokens: Mapping[tuple[str, str], str]


class Kubelet:
    def __init__(
        self,
        node: str,
        config: SingleConfig,
        docker_socket: str,
        storage: Path,
        root: Path,
        service: ApiService | None = None,
    ) -> None:
        self.node, self.config, self.storage, self.root = node, config, storage, root
        self.service = service
        self.docker = Docker(docker_socket)
        self.client: AsyncClient | None = None
        self._pods: dict[str, asyncio.Task[None]] = {}
        self._deleting: dict[str, asyncio.Event] = {}
        self._grace: dict[str, int] = {}  # seconds each pod being deleted has
        self._running: dict[str, Pod] = {}  # the pods whose container runs, by uid
        self._reposting = asyncio.Lock()  # a Running status posted again never lands after the pod's end

    @property
    def api(self) -> AsyncClient:
        assert self.client is not None
        return self.client

    async def run(self) -> None:
        """Follows the pods bound to this node until cancelled (a cancelled kubelet is a lost node)."""
        self.client = AsyncClient(self.config, field_manager=f"kubelet-{self.node}")
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while True:
                with contextlib.suppress(httpx.HTTPError, ApiError, Exception):
                    async for kind, pod in self.api.watch(Pod, namespace=ALL_NS, fields={"spec.nodeName": self.node}):
                        self._see(pod, removed=kind == "DELETED")
                await asyncio.sleep(0.2)
        finally:
            heartbeat.cancel()
            for task in self._pods.values():
                task.cancel()
            await asyncio.gather(*self._pods.values(), return_exceptions=True)
            await self.client.close()
            await self.docker.http.aclose()

    async def _heartbeat(self) -> None:
        """The node's Ready condition, renewed every HEARTBEAT seconds: its silence is how a lost node shows. A node
        the lifecycle controller had taken as lost (this kubelet was only slow, e.g. on a loaded machine) posts its
        running pods' status again, as the real kubelet's status sync does: they are Ready again."""
        while True:
            ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now()}
            with contextlib.suppress(ApiError, httpx2.HTTPError):
                node = await retried(lambda: self.api.get(Node, self.node))
                conditions = (node.status.conditions if node.status else None) or []
                lost = any(c.type == "Ready" and c.status == "Unknown" for c in conditions)
                await retried(
                    lambda r=ready: self.api.patch(  # type: ignore[misc]
                        Node.Status, self.node, {"status": {"conditions": [r]}}, patch_type=PatchType.MERGE
                    )
                )
                for uid, pod in list(self._running.items()) if lost else ():
                    async with self._reposting:
                        if uid in self._running:
                            with contextlib.suppress(ApiError):
                                await self._status(pod, "Running", {"running": {"startedAt": now()}})
            await asyncio.sleep(HEARTBEAT)

    def _see(self, pod: Pod, *, removed: bool = False) -> None:
        """A pod's news: a new one starts; one being deleted stops within its grace period, and one removed from the
        API at once (a forced deletion) is killed at once."""
        assert pod.metadata is not None
        uid = str(pod.metadata.uid)
        if uid not in self._pods:
            if removed or (pod.status is not None and pod.status.phase in ("Succeeded", "Failed")):
                return
            self._deleting[uid] = asyncio.Event()
            self._pods[uid] = asyncio.create_task(self._pod(pod))
            self._pods[uid].add_done_callback(_report)
        if removed:
            self._grace[uid] = 0
            self._deleting[uid].set()
        elif pod.metadata.deletionTimestamp is not None:
            self._grace[uid] = pod.metadata.deletionGracePeriodSeconds or 0
            self._deleting[uid].set()

    async def _pod(self, pod: Pod) -> None:
        assert pod.metadata is not None
        assert pod.spec is not None
        name, namespace = str(pod.metadata.name), str(pod.metadata.namespace)
        deleting = self._deleting[str(pod.metadata.uid)]
        container: str | None = None
        try:
            prepared = await self._prepare(pod, deleting)
            if prepared is not None:
                container = await self.docker.run(prepared)
                await self._status(pod, "Running", {"running": {"startedAt": now()}})
                self._running[str(pod.metadata.uid)] = pod
                await self._until_done(pod, container, deleting)
            if deleting.is_set() and self._grace.get(str(pod.metadata.uid)) != 0:
                await retried(lambda: self.api.delete(Pod, name, namespace=namespace, grace_period=0))
        except ApiError as exc:
            if exc.status.code != 404:  # the pod was removed meanwhile: nothing to report to
                raise
        finally:
            if container is not None:
                await asyncio.shield(self.docker.remove(container))
            self._running.pop(str(pod.metadata.uid), None)
            shutil.rmtree(self.root / "pods" / str(pod.metadata.uid), ignore_errors=True)

    async def _prepare(self, pod: Pod, deleting: asyncio.Event) -> dict[str, Any] | None:
        """The container's create body, once its image, volumes and environment are there; None if the pod was
        deleted meanwhile."""
        assert pod.spec is not None
        assert pod.metadata is not None
        spec = pod.spec.containers[0]
        image = str(spec.image)
        if not _IMAGE.fullmatch(image):
            await self._waiting(
                pod, "InvalidImageName", f'Failed to apply default image tag "{image}": invalid reference format'
            )
            await deleting.wait()
            return None
        while not await self.docker.has_image(image):
            error = await self.docker.pull(image, await self._pull_auth(pod, image))
            if error is None:
                break
            await self._event(pod, "Failed", f'Failed to pull image "{image}": {error}')
            await self._waiting(pod, "ErrImagePull", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deleting.wait(), PULL_BACKOFF)
                return None
            await self._waiting(pod, "ImagePullBackOff", f'Back-off pulling image "{image}"')
        env = [f"{e.name}={e.value or ''}" for e in spec.env or []]
        for source in spec.envFrom or []:
            if source.secretRef is not None:
                secret = await self._secret(pod, str(source.secretRef.name))
                env += [f"{k}={base64.b64decode(v).decode()}" for k, v in (secret.data or {}).items()]
        folders: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            if volume.persistentVolumeClaim is not None:
                claim = volume.persistentVolumeClaim.claimName
                await retried(lambda c=claim: self.api.get(PersistentVolumeClaim, c, namespace=pod.metadata.namespace))
                folders[volume.name] = self.storage / str(pod.metadata.namespace) / claim
            elif volume.emptyDir is not None:
                folders[volume.name] = self.root / "pods" / str(pod.metadata.uid) / "volumes" / volume.name
            elif volume.secret is not None:  # its keys as files, as the real kubelet writes them
                secret = await self._secret(pod, str(volume.secret.secretName))
                folder = self.root / "pods" / str(pod.metadata.uid) / "volumes" / volume.name
                folder.mkdir(parents=True, exist_ok=True)
                for key, value in (secret.data or {}).items():
                    (folder / key).write_bytes(base64.b64decode(value))
                    (folder / key).chmod(volume.secret.defaultMode or 0o644)
                folders[volume.name] = folder
            else:
                raise NotImplementedError(f"the fake kubelet has no volume type of {volume.name}")
        binds = []
        for mount in spec.volumeMounts or []:
            source = folders[mount.name] / (mount.subPath or "")
            source.mkdir(parents=True, exist_ok=True)
            binds.append(f"{source}:{mount.mountPath}" + (":ro" if mount.readOnly else ""))
        if self.service is not None:
            # Every pod gets the API's address; a pod whose service account token is mounted gets the token the
            # emulator maps to that account's Role, with the CA and its namespace (what in-cluster clients read).
            env += [f"KUBERNETES_SERVICE_HOST={self.service.host}", f"KUBERNETES_SERVICE_PORT={self.service.port}"]
            account = pod.spec.serviceAccountName or "default"
            token = self.service.tokens.get((str(pod.metadata.namespace), account))
            if pod.spec.automountServiceAccountToken is not False and token is not None:
                folder = self.root / "pods" / str(pod.metadata.uid) / "volumes" / "kube-api-access"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "token").write_text(token)
                (folder / "namespace").write_text(str(pod.metadata.namespace))
                shutil.copy(self.service.ca, folder / "ca.crt")
                binds.append(f"{folder}:{SERVICE_ACCOUNT_MOUNT}:ro")
        limits = (spec.resources.limits if spec.resources else None) or {}
        # No pod network is emulated: pods share the host's (their IP is 127.0.0.1), so they reach the tests'
        # registry and each other's ports; hostAliases become /etc/hosts lines.
        host_config: dict[str, Any] = {"Binds": binds, "NetworkMode": "host", **_security(pod.spec, spec)}
        host_config["ExtraHosts"] = [
            f"{name}:{alias.ip}" for alias in pod.spec.hostAliases or [] for name in alias.hostnames or []
        ]
        if "memory" in limits:
            host_config.update(Memory=memory_bytes(limits["memory"]), MemorySwap=memory_bytes(limits["memory"]))
        if "cpu" in limits:  # the CFS quota, as the real kubelet sets it
            host_config["NanoCpus"] = cpu_nanos(limits["cpu"])
        body: dict[str, Any] = {
            "Image": image,
            "Env": env,
            "Labels": {LABEL: self.node, "io.outpost.kube.pod": str(pod.metadata.uid)},
            "HostConfig": host_config,
        }
        if spec.command is not None:
            body["Entrypoint"] = spec.command
        if spec.args is not None:
            body["Cmd"] = spec.args
        if spec.workingDir:
            body["WorkingDir"] = spec.workingDir
        user = (spec.securityContext.runAsUser if spec.securityContext else None) or (
            pod.spec.securityContext.runAsUser if pod.spec.securityContext else None
        )
        if user is not None:
            body["User"] = str(user)
        return body

    async def _until_done(self, pod: Pod, container: str, deleting: asyncio.Event) -> None:
        assert pod.spec is not None
        assert pod.metadata is not None
        waiting = asyncio.create_task(self.docker.wait(container))
        deleted = asyncio.create_task(deleting.wait())
        deadline = pod.spec.activeDeadlineSeconds
        done, _ = await asyncio.wait({waiting, deleted}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        reason = ""
        if waiting not in done:
            reason = "" if deleted in done else "DeadlineExceeded"
            grace = self._grace.get(str(pod.metadata.uid), pod.spec.terminationGracePeriodSeconds or 30)
            await self.docker.stop(container, grace)
        deleted.cancel()
        state = await waiting
        code = int(state.get("ExitCode", 137))
        ended = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        terminated = {"exitCode": code, "reason": ended, "startedAt": now(), "finishedAt": now()}
        phase = "Succeeded" if code == 0 and not reason else "Failed"
        extra = (
            {
                "reason": reason,
                "message": f"Pod was active on the node longer than the specified deadline ({deadline}s)",
            }
            if reason
            else {}
        )
        async with self._reposting:
            self._running.pop(str(pod.metadata.uid), None)
        await self._status(pod, phase, {"terminated": terminated}, **extra)

    async def _status(self, pod: Pod, phase: str, state: dict[str, Any], **extra: str) -> None:
        assert pod.metadata is not None
        assert pod.spec is not None
        spec = pod.spec.containers[0]
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": now(),
            "containerStatuses": [
                {
                    "name": spec.name,
                    "image": spec.image,
                    "imageID": "",
                    "ready": "running" in state,
                    "restartCount": 0,
                    "state": state,
                }
            ],
            "conditions": [{"type": "Ready", "status": "True" if "running" in state else "False"}],
            **extra,
        }
        await retried(
            lambda: self.api.patch(
                Pod.Status,
                str(pod.metadata.name),
                {"status": status},
                namespace=pod.metadata.namespace,
                patch_type=PatchType.MERGE,
            )
        )

    async def _waiting(self, pod: Pod, reason: str, message: str) -> None:
        await self._status(pod, "Pending", {"waiting": {"reason": reason, "message": message}})

    async def _event(self, pod: Pod, reason: str, message: str) -> None:
        assert pod.metadata is not None
        event = Event.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{pod.metadata.name}.", "namespace": pod.metadata.namespace},
                "involvedObject": {
                    "kind": "Pod",
                    "name": pod.metadata.name,
                    "namespace": pod.metadata.namespace,
                    "uid": pod.metadata.uid,
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "source": {"component": "kubelet", "host": self.node},
            }
        )
        await retried(lambda: self.api.create(event))

    async def _secret(self, pod: Pod, name: str) -> Secret:
        assert pod.metadata is not None
        return await retried(lambda: self.api.get(Secret, name, namespace=pod.metadata.namespace))

    async def _pull_auth(self, pod: Pod, image: str) -> dict[str, str] | None:
        """The credentials of the pod's imagePullSecrets for the image's registry, as the engine wants them."""
        assert pod.spec is not None
        assert pod.metadata is not None
        domain = image.split("/", 1)[0]
        for ref in pod.spec.imagePullSecrets or []:
            secret = await self._secret(pod, str(ref.name))
            config = json.loads(base64.b64decode((secret.data or {}).get(".dockerconfigjson", "e30=")))
            entry = config.get("auths", {}).get(domain)
            if entry:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return {"username": user, "password": password, "serveraddress": domain}
        return None
