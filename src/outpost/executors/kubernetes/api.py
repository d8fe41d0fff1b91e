"""The Kubernetes API as the executor uses it: its configuration, calls retried on throttling, server errors and lost
connections, creates that a retry cannot make twice, deletions, removal by label, and a pod watch that survives any
cut. lightkube's errors become ExecutorError here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any, Self, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.resources.core_v1 import Pod, Secret

from outpost.errors import ExecutorError
from outpost.executors.kubernetes import objects, podstate

T = TypeVar("T")
STOP_GRACE = 3  # seconds between SIGTERM and SIGKILL when a step is cancelled
RETRIED = {429, 500, 502, 503, 504}  # API answers worth another try
RETRY_FOR = 30.0  # seconds an API call is retried before the step fails
POLL = 0.2  # seconds between reads of a pod or of a step's output file
KUBELET_SLACK = 30.0  # seconds a kubelet may take, beyond the grace period, to finish a pod's deletion
NAMESPACE = "outpost"  # without --namespace: the kubeconfig context's namespace, else this


class PodWatch:
    """The latest reading of one pod, kept by a watch that resumes after any cut (from a fresh read)."""

    def __init__(self, client: AsyncClient, name: str, container: str = objects.STEP_CONTAINER) -> None:
        self.client, self.name, self.container = client, name, container
        self.reading: podstate.Reading | None = None
        self.gone = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._keep())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def changed(self, within: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancel that arrives as the event is
        # set (seen: a cancelled step went on following its pod until its sleep ended).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._changed.wait()
        self._changed.clear()

    def _see(self, pod: Pod | None) -> None:
        if pod is None:
            self.gone = True
        else:
            self.reading = podstate.read(pod, self.container)
        self._changed.set()

    async def _keep(self) -> None:
        pause = 0.2
        while not self.gone:
            try:
                pod = await self.client.get(Pod, self.name)
                self._see(pod)
                assert pod.metadata is not None
                watch = self.client.watch(
                    Pod, fields={"metadata.name": self.name}, resource_version=pod.metadata.resourceVersion
                )
                async for kind, found in watch:
                    self._see(None if kind == "DELETED" else found)
                    pause = 0.2
            except ApiError as exc:
                if exc.status.code == 404:
                    self._see(None)
                    return
            except httpx2.HTTPError:
                pass
            except Exception as exc:  # whatever broke the watch (an answer lightkube cannot decode...): never stall
                logging.getLogger("outpost.runner").warning(
                    "watch of pod %s failed: %r; watching again", self.name, exc
                )
            await asyncio.sleep(pause)  # a watch cut, a 410 Gone, an error: read the pod afresh and watch again
            pause = min(pause * 2, 2.0)


async def gone(client: AsyncClient, name: str, within: float) -> bool:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while loop.time() < give_up:
        try:
            await client.get(Pod, name)
        except ApiError as exc:
            if exc.status.code == 404:
                return True
        except httpx2.TransportError:
            pass
        await asyncio.sleep(POLL)
    return False


async def remove_marked(
    client: AsyncClient, namespace: str, mark: str | None, keep: frozenset[str] = frozenset()
) -> int:
    """At a runner's start, nothing of its own runs yet but engine pods: every pod and Secret with its mark is what an
    earlier run of it left (crashed, killed, rescheduled with its folder lost), and goes now, at once, except what
    belongs to the builds in `keep` (label values of builds whose engine pod it may adopt: the engine pod, its
    Secret, its step pods). Returns the pods removed."""
    if mark is None:
        return 0
    selector: dict[str, Any] = {objects.RUNNER_LABEL: mark}
    removed = 0
    for kind in (Pod, Secret):
        found = await call(
            f"list what this runner left ({kind.__name__}s)",
            lambda k=kind: collect(client.list(k, labels=selector, namespace=namespace)),  # type: ignore[misc]
        )
        for obj in found:
            if objects.build_of(obj.metadata.labels or {}) in keep:
                continue
            await delete(client, kind, name_of(obj), 0)
            removed += kind is Pod
    return removed


def namespace_of(options: Mapping[str, str], config: SingleConfig | None) -> str:
    """--namespace, else the namespace the kubeconfig's context names (in-cluster: the service account's)."""
    given = options.get("namespace")
    if given:
        return given
    if config is not None and config.context.namespace:
        return str(config.context.namespace)
    return NAMESPACE


def config_of(options: Mapping[str, str]) -> SingleConfig:
    path = options.get("kubeconfig")
    try:
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        single = config.get()
    except Exception as exc:  # lightkube raises ConfigError, OSError, YAML errors...
        where = path or "in-cluster or KUBECONFIG"
        raise ExecutorError(f"cannot read the Kubernetes configuration ({where}): {exc}") from exc
    if single is None:
        raise ExecutorError(f"no current context in the Kubernetes configuration {path}")
    return single


async def call(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """One API call, tried again on 429, 5xx and lost connections for up to RETRY_FOR seconds."""
    loop = asyncio.get_running_loop()
    give_up, pause = loop.time() + RETRY_FOR, 0.1
    while True:
        try:
            return await call()
        except ApiError as exc:
            if exc.status.code not in RETRIED or loop.time() > give_up:
                raise ExecutorError(f"{what}: {exc.status.code} {exc.status.message}") from exc
        except httpx2.TransportError as exc:
            if loop.time() > give_up:
                raise ExecutorError(f"{what}: cannot reach the Kubernetes API: {exc!r}") from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def create(client: AsyncClient, obj: Any, what: str) -> Any:
    """Creates `obj`; an object already there under its name (a retried create that had succeeded) is taken."""
    try:
        return await call(what, lambda: client.create(obj))
    except ExecutorError as exc:
        cause = exc.__cause__
        if isinstance(cause, ApiError) and cause.status.code == 409:
            return await call(what, lambda: client.get(type(obj), obj.metadata.name))
        raise


async def delete(client: AsyncClient, kind: Any, name: str, grace: int) -> None:
    try:
        await call(f"delete {kind.__name__} {name}", lambda: client.delete(kind, name, grace_period=grace))
    except ExecutorError as exc:
        if not (isinstance(exc.__cause__, ApiError) and exc.__cause__.status.code == 404):
            raise


async def collect(items: AsyncIterable[T]) -> list[T]:
    return [item async for item in items]


def name_of(obj: Any) -> str:
    return str(obj.metadata.name)


async def remove_build(client: AsyncClient, namespace: str, build_id: str, lost_node: str = "") -> None:
    """Deletes every pod and secret of the build and waits until the pods are gone. Pods on `lost_node` (whose
    kubelet will never finish a graceful deletion) are force-deleted at once instead of after the wait."""
    selector: dict[str, Any] = dict(objects.build_selector(build_id))

    async def listed(kind: Any) -> list[Any]:
        return await call(
            f"list the build's {kind.__name__}s",
            lambda: collect(client.list(kind, labels=selector, namespace=namespace)),
        )

    for kind in (Pod, Secret):
        for found in await listed(kind):
            lost = kind is Pod and bool(lost_node) and found.spec is not None and found.spec.nodeName == lost_node
            await delete(client, kind, name_of(found), 0 if kind is Secret or lost else STOP_GRACE)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + STOP_GRACE + KUBELET_SLACK
    while left := await listed(Pod):
        if loop.time() > give_up:  # a lost node's pods: force-deleted
            for found in left:
                await delete(client, Pod, name_of(found), 0)
            return
        await asyncio.sleep(POLL)
