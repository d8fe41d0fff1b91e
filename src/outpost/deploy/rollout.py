"""A Deployment's image update and its rollout, as `kubectl set image` and `kubectl rollout status|undo` do them:
pure builders of the patches and of the rollout's state from the Deployment's own status, and the watcher that polls
it until the new pods are available, the progress deadline passes or the step's time runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from outpost.deploy.clusters import ClusterError

REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"
POLL = 1.0  # seconds between looks at the Deployment
Say = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class RolloutState:
    done: bool
    failed: bool
    message: str


def image_patch(deployment: dict[str, Any], image: str, pull_secret: str | None) -> list[dict[str, Any]]:
    """A JSON patch setting `image` on every container of the pod template, and referencing `pull_secret` if the
    template does not already."""
    spec = deployment["spec"]["template"]["spec"]
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": f"/spec/template/spec/containers/{i}/image", "value": image}
        for i, _ in enumerate(spec.get("containers") or [])
    ]
    if pull_secret is not None:
        present = [ref.get("name") for ref in spec.get("imagePullSecrets") or []]
        if pull_secret not in present:
            if spec.get("imagePullSecrets"):
                ops.append(
                    {"op": "add", "path": "/spec/template/spec/imagePullSecrets/-", "value": {"name": pull_secret}}
                )
            else:
                ops.append(
                    {"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": [{"name": pull_secret}]}
                )
    return ops


def state(deployment: dict[str, Any]) -> RolloutState:
    """Where the rollout is, by the rules of `kubectl rollout status`."""
    meta, spec, status = deployment["metadata"], deployment["spec"], deployment.get("status") or {}
    name = meta["name"]
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return RolloutState(False, False, f"waiting for deployment {name!r} spec update to be observed")
    progressing = condition(deployment, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return RolloutState(False, True, f"deployment {name!r} exceeded its progress deadline")
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < wanted:
        return RolloutState(False, False, f"{updated} of {wanted} updated replicas are ready")
    if total > updated:
        return RolloutState(False, False, f"{total - updated} old replicas are pending termination")
    if available < updated:
        return RolloutState(False, False, f"{available} of {updated} updated replicas are available")
    return RolloutState(True, False, f"deployment {name!r} successfully rolled out")


def condition(deployment: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (deployment.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def owned(replicasets: list[dict[str, Any]], deployment: dict[str, Any]) -> list[dict[str, Any]]:
    uid = deployment["metadata"].get("uid")
    return [rs for rs in replicasets if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or [])]


def rollback_patch(deployment: dict[str, Any], replicasets: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The patch that puts back the pod template of the revision before the current one (`kubectl rollout undo`),
    and that revision's number; ClusterError when there is none."""
    current = revision(deployment)
    older = [rs for rs in owned(replicasets, deployment) if 0 < revision(rs) < current]
    if not older:
        raise ClusterError(f"deployment {deployment['metadata']['name']!r} has no revision before {current}")
    previous = max(older, key=revision)
    template = previous["spec"]["template"]
    labels = {k: v for k, v in (template.get("metadata") or {}).get("labels", {}).items() if k != HASH}
    template = {**template, "metadata": {**template.get("metadata", {}), "labels": labels}}
    return [{"op": "replace", "path": "/spec/template", "value": template}], revision(previous)


def describe(deployment: dict[str, Any]) -> list[str]:
    """The Deployment's conditions, one line each, as the failure's log says them."""
    return [
        f"  {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
        for c in (deployment.get("status") or {}).get("conditions") or []
    ]


async def watch(
    get: Callable[[], Awaitable[dict[str, Any]]], deadline: float, say: Say
) -> tuple[RolloutState, dict[str, Any]]:
    """Polls the Deployment until its rollout is done or failed, or `deadline` (monotonic) passes; says each new
    state once."""
    last = ""
    while True:
        deployment = await get()
        now = state(deployment)
        if now.message != last:
            await say(now.message)
            last = now.message
        if now.done or now.failed:
            return now, deployment
        if time.monotonic() >= deadline:
            return RolloutState(False, True, "timed out waiting for the rollout"), deployment
        await asyncio.sleep(min(POLL, max(deadline - time.monotonic(), 0.05)))
