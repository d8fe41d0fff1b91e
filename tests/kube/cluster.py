"""The in-repo test cluster: the API server emulator on loopback, a fake scheduler over a few fake nodes, and a fake
kubelet per node that runs pods on the tests' Docker engine. All of it runs on one event loop in a thread of the test
process; the code under test reaches it only through a kubeconfig file, as it would a real cluster.

The scheduler is part of the emulated control plane (it works on the store directly, as kube-scheduler would through
its informers): it binds each pending pod to the least busy ready node whose labels match its nodeSelector, and
leaves a pod no node can take Pending with PodScheduled=False/Unschedulable and a FailedScheduling Warning event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import yaml
from lightkube import KubeConfig

from outpost.executors.kubernetes import objects
from tests.e2e.tls import make_certificates
from tests.kube import apiserver
from tests.kube.controllers import Controllers
from tests.kube.kubelet import ApiService, Docker, Kubelet

T = TypeVar("T")
NAMESPACE = "builds"
RUNNER_TOKEN = "runner-service-account-token"
ENGINE_TOKEN = "engine-service-account-token"  # projected into pods of the engine service account
ENGINE_SERVICE_ACCOUNT = "outpost-engine"
WORK_CLAIM = "outpost-work"
NODE_GRACE = 2.0  # seconds of kubelet silence before a node is taken as lost
NODES = {"node-a": {"disk": "ssd"}, "node-b": {"disk": "ssd"}, "node-c": {"disk": "hdd"}}


class Cluster:
    def __init__(self, folder: Path, docker_socket: str, *, kubelets: bool = True) -> None:
        self.folder, self.docker_socket, self.with_kubelets = folder, docker_socket, kubelets
        self.storage = folder / "storage"  # claims' folders
        # Bound here and handed to uvicorn: no other process can take the port between choosing and listening.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        # The same API over TLS, as pods reach it in-cluster (lightkube's in-cluster configuration is https only).
        self._tls_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tls_socket.bind(("127.0.0.1", 0))
        self.tls_port: int = self._tls_socket.getsockname()[1]
        self._tls_server: uvicorn.Server | None = None
        # (namespace, service account) -> the token a pod of that account gets (store.roles maps it to a Role).
        self.service_tokens: dict[tuple[str, str], str] = {(NAMESPACE, ENGINE_SERVICE_ACCOUNT): ENGINE_TOKEN}
        self.store = apiserver.Store()
        self.kubeconfig = folder / "kubeconfig"  # the cluster's admin (no token: not checked)
        self.runner_kubeconfig = folder / "runner-kubeconfig"  # the runner's service account, held to its Role
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._kubelets: dict[str, asyncio.Task[None]] = {}
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def claim_folder(self, claim: str = WORK_CLAIM, namespace: str = NAMESPACE) -> Path:
        """Where the fake kubelet keeps a claim's files (the runner's data folder sits in the work claim's)."""
        return self.storage / namespace / claim

    def executor_options(self, **more: str) -> dict[str, str]:
        """The Kubernetes executor's options for a runner whose data folder is the work claim's folder."""
        return {
            "kubeconfig": str(self.runner_kubeconfig),
            "namespace": NAMESPACE,
            "work_claim": WORK_CLAIM,
            "work_root": str(self.claim_folder()),
            **more,
        }

    # --- lifetime ---------------------------------------------------------------------------------------------

    def start(self) -> Cluster:
        self.storage.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "runner", "user": {}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "runner", "namespace": NAMESPACE}}
            ],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        config["users"] = [{"name": "runner", "user": {"token": RUNNER_TOKEN}}]
        self.runner_kubeconfig.write_text(yaml.safe_dump(config))
        # The runner is held to the Role the product says it needs: a call outside it is a 403 in a test.
        role = objects.runner_role("outpost-runner", NAMESPACE).to_dict()
        self.store.roles[RUNNER_TOKEN] = (NAMESPACE, role["rules"])
        engine = objects.engine_role("outpost-engine", NAMESPACE).to_dict()  # engine pods' service account
        self.store.roles[ENGINE_TOKEN] = (NAMESPACE, engine["rules"])
        (self.folder / "tls").mkdir(parents=True, exist_ok=True)
        self.ca, self._certificate, self._key = make_certificates(self.folder / "tls")
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"the test cluster did not start: {self._failure!r}")
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or stop()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._seed()
        config = uvicorn.Config(
            apiserver.app(self.store),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        tls = uvicorn.Config(
            apiserver.app(self.store),
            host="127.0.0.1",
            port=self.tls_port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=str(self._certificate),
            ssl_keyfile=str(self._key),
        )
        self._tls_server = uvicorn.Server(tls)
        serving_tls = asyncio.create_task(self._tls_server.serve(sockets=[self._tls_socket]))
        while not (self._server.started and self._tls_server.started):
            for task in (serving, serving_tls):
                if task.done():
                    await task
            await asyncio.sleep(0.02)
        scheduler = asyncio.create_task(self._schedule())
        lifecycle = asyncio.create_task(self._watch_nodes())
        controllers = asyncio.create_task(Controllers(self.store).run())  # Deployments and ReplicaSets
        for node in NODES if self.with_kubelets else ():
            self._start_kubelet(node)
        self._ready.set()
        try:
            await asyncio.gather(serving, serving_tls)
        finally:
            scheduler.cancel()
            lifecycle.cancel()
            controllers.cancel()
            for task in self._kubelets.values():
                task.cancel()
            await asyncio.gather(scheduler, lifecycle, controllers, *self._kubelets.values(), return_exceptions=True)

    def _start_kubelet(self, node: str) -> None:
        single = KubeConfig.from_file(self.kubeconfig).get()
        assert single is not None
        service = ApiService("127.0.0.1", self.tls_port, self.ca, self.service_tokens)
        kubelet = Kubelet(node, single, self.docker_socket, self.storage, self.folder / "nodes" / node, service)
        self._kubelets[node] = asyncio.create_task(kubelet.run())

    async def _seed(self) -> None:
        store = self.store
        for name in ("default", NAMESPACE):
            await store.create("namespaces", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for node, labels in NODES.items():
            await store.create(
                "nodes",
                "",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, **labels}},
                },
            )
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": WORK_CLAIM},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
        }
        await store.create("persistentvolumeclaims", NAMESPACE, claim)

    def stop(self) -> None:
        if self._loop is not None and self._server is not None and self._thread and self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._shutdown)
        if self._thread is not None:
            self._thread.join(30)
        self._socket.close()
        self._tls_socket.close()
        if self.with_kubelets:
            with contextlib.suppress(Exception):
                asyncio.run(_remove_containers(self.docker_socket))

    async def _shutdown(self) -> None:
        for task in self._kubelets.values():
            task.cancel()
        await asyncio.gather(*self._kubelets.values(), return_exceptions=True)
        self.store.closing = True
        self.store.notify()
        assert self._server is not None
        self._server.should_exit = True
        if self._tls_server is not None:
            self._tls_server.should_exit = True

    # --- for tests ----------------------------------------------------------------------------------------------

    def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Runs `work` on the cluster's loop (the store belongs to it) and returns its result."""
        assert self._loop is not None

        async def run() -> T:
            return await work()

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(30)

    def pods(self, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        async def listed() -> list[dict[str, Any]]:
            return copy.deepcopy(self.store.list("pods", namespace, None, None))

        return self.call(listed)

    def objects(self, plural: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        async def listed() -> list[dict[str, Any]]:
            return copy.deepcopy(self.store.list(plural, namespace, None, None))

        return self.call(listed)

    def delete_pod(self, name: str, grace: int | None = None, namespace: str = NAMESPACE) -> None:
        """A pod deleted from outside (kubectl delete pod)."""

        async def delete() -> None:
            await self.store.delete("pods", namespace, name, grace)

        self.call(delete)

    def taint(self, node: str, key: str, value: str, effect: str = "NoSchedule") -> None:
        """kubectl taint nodes NODE key=value:effect (the scheduler then keeps off it pods that do not tolerate it)."""

        async def taint() -> None:
            found = copy.deepcopy(self.store.get("nodes", "", node))
            spec = found.setdefault("spec", {})
            spec["taints"] = [*spec.get("taints", []), {"key": key, "value": value, "effect": effect}]
            await self.store.update("nodes", "", node, found)

        self.call(taint)

    def stop_kubelet(self, node: str) -> None:
        """A node lost: its kubelet stops (its containers go with it, as in a crash) and reports nothing more."""

        async def stop() -> None:
            task = self._kubelets[node]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.call(stop)

    # --- the node lifecycle controller ------------------------------------------------------------------------

    async def _watch_nodes(self) -> None:
        """A node whose kubelet stayed silent for NODE_GRACE seconds becomes Ready=Unknown, and the pods on it
        Ready=False (the real controller waits 40 s; evictions after 300 s more are not emulated)."""
        while True:
            await asyncio.sleep(0.5)
            for node in self.store.list("nodes", None, None, None):
                ready = next(
                    (c for c in (node.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None
                )
                if ready is None or ready["status"] != "True" or _age(ready["lastHeartbeatTime"]) < NODE_GRACE:
                    continue
                lost = copy.deepcopy(node)
                lost["status"]["conditions"] = [{**ready, "status": "Unknown", "reason": "NodeStatusUnknown",
                                                 "message": "Kubelet stopped posting node status."}]  # fmt: skip
                await self.store.update("nodes", "", node["metadata"]["name"], lost, sub="status")
                for pod in self.store.list("pods", None, None, f"spec.nodeName={node['metadata']['name']}"):
                    marked = copy.deepcopy(pod)
                    conditions = [c for c in marked["status"].get("conditions", []) if c["type"] != "Ready"]
                    marked["status"]["conditions"] = [*conditions, {"type": "Ready", "status": "False"}]
                    await self.store.update(
                        "pods", pod["metadata"]["namespace"], pod["metadata"]["name"], marked, sub="status"
                    )

    # --- the scheduler ----------------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            for pod in list(self.store.list("pods", None, None, "spec.nodeName=")):
                if not pod["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(apiserver.ApiFailure):
                        await self._place(pod)
            await self.store.next_change(1.0)

    def _node_ready(self, node: str) -> bool:
        """A node whose kubelet was stopped (a lost node) takes no new pod; without kubelets, every node is ready."""
        if not self.with_kubelets:
            return True
        return node in self._kubelets and not self._kubelets[node].done()

    async def _place(self, pod: dict[str, Any]) -> None:
        wanted = pod["spec"].get("nodeSelector") or {}
        tolerations = pod["spec"].get("tolerations") or []
        nodes = self.store.list("nodes", None, None, None)
        fits = [
            n["metadata"]["name"]
            for n in nodes
            if all(n["metadata"]["labels"].get(k) == v for k, v in wanted.items())
            and all(tolerated(taint, tolerations) for taint in (n.get("spec") or {}).get("taints") or [])
            and self._node_ready(n["metadata"]["name"])
        ]
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if fits:
            load = {n: len(self.store.list("pods", None, None, f"spec.nodeName={n}")) for n in fits}
            node = min(fits, key=lambda n: (load[n], n))
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = node
            conditions = [c for c in bound["status"].get("conditions", []) if c["type"] != "PodScheduled"]
            bound["status"]["conditions"] = [*conditions, {"type": "PodScheduled", "status": "True"}]
            self.store._bump(bound)
            self.store.objects[("pods", ns, name)] = bound
            await self.store._record("MODIFIED", "pods", bound)
            return
        if any(c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions", [])):
            return  # said once
        message = (
            f"0/{len(nodes)} nodes are available: {len(nodes)} node(s) didn't match Pod's node affinity/selector "
            "or had untolerated taints."
        )
        unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        marked = copy.deepcopy(pod)
        marked["status"]["conditions"] = [unschedulable]
        await self.store.update("pods", ns, name, marked, sub="status")
        await self.store.create(
            "events",
            ns,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{name}."},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": ns, "uid": pod["metadata"]["uid"]},
                "reason": "FailedScheduling",
                "message": message,
                "type": "Warning",
                "source": {"component": "default-scheduler"},
            },
        )


def tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    """Whether a pod with `tolerations` may be scheduled onto a node with `taint` (PreferNoSchedule never stops it),
    by the rules of the real scheduler's TaintToleration plugin."""
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration["key"] == taint.get("key"):
                return True
        elif toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _age(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)).total_seconds()


async def _remove_containers(socket: str) -> None:
    docker = Docker(socket)
    try:
        for node in NODES:
            await docker.remove_all(node)
    finally:
        await docker.http.aclose()
