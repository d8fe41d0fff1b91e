"""The emulated cluster's Deployment and ReplicaSet controllers, as kube-controller-manager runs them, working on the
API server's store directly (as the scheduler does).

A Deployment's pod template is hashed (the `pod-template-hash` label); the ReplicaSet of that hash is created, or,
when the template went back to an older one (a rollback), that older ReplicaSet is taken again and becomes the newest
revision (the `deployment.kubernetes.io/revision` annotation, on the ReplicaSet and on the Deployment). The new
ReplicaSet is scaled to the Deployment's replicas at once, and the old ones to zero only once the new one's pods are
all available: a rollout whose pods never become ready (a bad image: the fake kubelet shows ErrImagePull) keeps the
old pods serving, as maxSurge does. `.status` has the replica counts, `observedGeneration` and the two conditions:
Available (MinimumReplicasAvailable / MinimumReplicasUnavailable) and Progressing (NewReplicaSetCreated,
FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable, and ProgressDeadlineExceeded once
`progressDeadlineSeconds` passed without progress).

Simplified: pods are created and removed all at once rather than by maxSurge/maxUnavailable steps, minReadySeconds
is not counted, a pod whose container ended is not restarted (the fake kubelet runs restartPolicy Never) and stays
counted, not ready; old ReplicaSets beyond revisionHistoryLimit are kept.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from typing import Any

from tests.kube.apiserver import ApiFailure, Store, now

REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(o.get("uid") == owner["metadata"]["uid"] for o in obj["metadata"].get("ownerReferences") or [])


def revision(obj: dict[str, Any]) -> int:
    return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    return status.get("phase") == "Running" and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


class Controllers:
    def __init__(self, store: Store) -> None:
        self.store = store
        # (deployment uid, generation, RS) -> (counts, since): a new template's rollout starts its own clock
        self._progress: dict[tuple[str, int, str], tuple[Any, float]] = {}
        self._created: set[str] = set()  # ReplicaSets this controller made (their first Progressing says so)

    async def run(self) -> None:
        while True:
            await self.reconcile()
            await self.store.next_change(1.0)

    async def reconcile(self) -> None:
        for plural, work in (("deployments", self._deployment), ("replicasets", self._replicaset)):
            for found in self.store.list(plural, None, None, None):
                meta = found["metadata"]
                with contextlib.suppress(ApiFailure):  # changed or gone meanwhile: the next round sees it
                    await work(self.store.get(plural, meta["namespace"], meta["name"]))

    # --- Deployments ----------------------------------------------------------------------------------------

    async def _deployment(self, deployment: dict[str, Any]) -> None:
        store = self.store
        meta, spec = deployment["metadata"], deployment["spec"]
        ns, name = meta["namespace"], meta["name"]
        template = spec["template"]
        wanted = template_hash(template)
        owned = [rs for rs in store.list("replicasets", ns, None, None) if owned_by(rs, deployment)]
        newest = max((revision(rs) for rs in owned), default=0)
        new = next((rs for rs in owned if rs["metadata"]["labels"].get(HASH) == wanted), None)
        replicas = int(spec.get("replicas", 1))
        if new is None:
            labels = {**(template.get("metadata") or {}).get("labels", {}), HASH: wanted}
            selector = {"matchLabels": {**spec["selector"].get("matchLabels", {}), HASH: wanted}}
            body = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{wanted}",
                    "labels": labels,
                    "annotations": {REVISION: str(newest + 1)},
                    "ownerReferences": [_reference(deployment)],
                },
                "spec": {
                    "replicas": replicas,
                    "selector": selector,
                    "template": {
                        **copy.deepcopy(template),
                        "metadata": {**template.get("metadata", {}), "labels": labels},
                    },
                },
            }
            new = await store.create("replicasets", ns, body)
            self._created.add(new["metadata"]["name"])
        elif revision(new) < newest:  # the template of an older revision again: it becomes the newest
            new = copy.deepcopy(new)
            new["metadata"].setdefault("annotations", {})[REVISION] = str(newest + 1)
            new = await store.update("replicasets", ns, new["metadata"]["name"], new)
        if new["spec"]["replicas"] != replicas:
            new = copy.deepcopy(new)
            new["spec"]["replicas"] = replicas
            new = await store.update("replicasets", ns, new["metadata"]["name"], new)
        new_status = new.get("status") or {}
        done = new_status.get("availableReplicas", 0) >= replicas and new_status.get("replicas", 0) == replicas
        for old in owned:
            if old["metadata"]["uid"] != new["metadata"]["uid"] and done and old["spec"]["replicas"] != 0:
                scaled = copy.deepcopy(old)
                scaled["spec"]["replicas"] = 0
                await store.update("replicasets", ns, old["metadata"]["name"], scaled)
        if (meta.get("annotations") or {}).get(REVISION) != str(revision(new)):
            annotated = copy.deepcopy(deployment)
            annotated["metadata"].setdefault("annotations", {})[REVISION] = str(revision(new))
            deployment = await store.update("deployments", ns, name, annotated)
        await self._deployment_status(deployment, new)

    async def _deployment_status(self, deployment: dict[str, Any], new: dict[str, Any]) -> None:
        store = self.store
        meta, spec = deployment["metadata"], deployment["spec"]
        ns = meta["namespace"]
        owned = [rs for rs in store.list("replicasets", ns, None, None) if owned_by(rs, deployment)]
        counts = {k: sum((rs.get("status") or {}).get(k, 0) for rs in owned)
                  for k in ("replicas", "readyReplicas", "availableReplicas")}  # fmt: skip
        new = store.get("replicasets", ns, new["metadata"]["name"])
        updated = (new.get("status") or {}).get("replicas", 0)
        new_available = (new.get("status") or {}).get("availableReplicas", 0)
        desired = int(spec.get("replicas", 1))
        unavailable_allowed = desired * 25 // 100
        rs_name = new["metadata"]["name"]
        previous = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}

        available = counts["availableReplicas"] >= desired - unavailable_allowed
        conditions = [
            _condition(previous, "Available", available,
                       "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                       "Deployment has minimum availability." if available
                       else "Deployment does not have minimum availability."),
        ]  # fmt: skip
        key = (meta["uid"], int(meta.get("generation", 1)), rs_name)
        progress = (updated, new_available)
        seen, since = self._progress.get(key, (None, time.monotonic()))
        if seen != progress:
            since = time.monotonic()
            self._progress[key] = (progress, since)
        complete = updated == desired and counts["replicas"] == desired and new_available >= desired
        old = previous.get("Progressing")
        if complete:
            reason, message, ok = "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.', True
        elif time.monotonic() - since > int(spec.get("progressDeadlineSeconds", 600)):
            reason, message, ok = (
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
                False,
            )
        elif old is None or rs_name not in old.get("message", "") or seen is None:
            if rs_name in self._created:
                self._created.discard(rs_name)
                reason, message = "NewReplicaSetCreated", f'Created new replica set "{rs_name}"'
            else:  # an older ReplicaSet taken again (a rollback), or the same one under a new generation
                reason, message = "FoundNewReplicaSet", f'Found new replica set "{rs_name}"'
            ok = True
        elif seen is not None and seen != progress:
            reason, message, ok = "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', True
        else:
            reason, message, ok = old["reason"], old["message"], old["status"] == "True"
        conditions.append(_condition(previous, "Progressing", ok, reason, message))
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": counts["replicas"],
            "updatedReplicas": updated,
            "readyReplicas": counts["readyReplicas"],
            "availableReplicas": counts["availableReplicas"],
            "unavailableReplicas": max(desired - counts["availableReplicas"], 0),
            "conditions": conditions,
        }
        if status != deployment.get("status"):
            await store.update("deployments", ns, meta["name"], {**deployment, "status": status}, sub="status")

    # --- ReplicaSets -----------------------------------------------------------------------------------------

    async def _replicaset(self, replicaset: dict[str, Any]) -> None:
        store = self.store
        meta, spec = replicaset["metadata"], replicaset["spec"]
        ns = meta["namespace"]
        pods = [p for p in store.list("pods", ns, None, None) if owned_by(p, replicaset)]
        alive = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        wanted = int(spec.get("replicas", 1))
        for _ in range(wanted - len(alive)):
            template = spec["template"]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": f"{meta['name']}-",
                    "labels": dict(template["metadata"]["labels"]),
                    "ownerReferences": [_reference(replicaset)],
                },
                "spec": copy.deepcopy(template["spec"]),
            }
            alive.append(await store.create("pods", ns, pod))
        if len(alive) > wanted:
            extra = sorted(alive, key=_ready)[: len(alive) - wanted]  # the ones not ready go first
            for pod in extra:
                await store.delete("pods", ns, pod["metadata"]["name"], None)
                alive.remove(pod)
        ready = sum(1 for p in alive if _ready(store.objects.get(("pods", ns, p["metadata"]["name"]), p)))
        status = {
            "replicas": len(alive),
            "fullyLabeledReplicas": len(alive),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": meta.get("generation", 1),
        }
        if status != replicaset.get("status"):
            await store.update("replicasets", ns, meta["name"], {**replicaset, "status": status}, sub="status")


def _condition(previous: dict[str, dict[str, Any]], kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    """A condition; its times move only when what it says changes."""
    status = "True" if ok else "False"
    old = previous.get(kind)
    if old is not None and (old["status"], old.get("reason"), old.get("message")) == (status, reason, message):
        return old
    changed = old is None or old["status"] != status
    stamp = now()
    return {"type": kind, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp if changed else old.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
            "reason": reason, "message": message}  # fmt: skip
