"""The emulator's Deployment controller, driven through lightkube as the deploy step drives a real cluster: a rollout
creates a ReplicaSet per template with a revision, its pods run on the fake kubelets (the real Docker engine), a bad
image keeps the old pods and ends in ProgressDeadlineExceeded, and a template set back to an older one takes that
ReplicaSet again as the newest revision. Also: discovery, server-side apply, strict validation of apps/v1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import containers
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster, kube_api = (
    containers.dockerd,
    containers.busybox_image,
    fixtures.kube_cluster,
    fixtures.kube_api,
)

pytestmark = pytest.mark.timeout(120)
BAD_IMAGE = "127.0.0.1:1/missing/app:1"  # a registry nobody listens on: the pull fails at once


def deployment(name: str, image: str, *, deadline: int = 600, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image, "command": ["sleep", "3600"]}]},
            },
        },
    }


@pytest.fixture
async def api(kube_cluster: Any) -> AsyncIterator[Any]:
    from lightkube import AsyncClient, KubeConfig

    async with AsyncClient(KubeConfig.from_file(kube_cluster.kubeconfig), namespace="default") as client:
        yield client


async def until(check: Any, what: str, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def condition(obj: Any, kind: str) -> Any:
    return next((c for c in obj.status.conditions or [] if c.type == kind), None)


async def test_a_deployment_rolls_out_a_new_image_and_a_rollback_takes_the_old_replicaset_again(
    api: Any, busybox_image: str, dockerd: Any
) -> None:
    from lightkube.resources.apps_v1 import Deployment, ReplicaSet
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType

    dockerd.cli("tag", busybox_image, "outpost-web:2")
    await api.create(Deployment.from_dict(deployment("web", busybox_image)))

    async def complete() -> Any:
        found = await api.get(Deployment, "web")
        progressing = condition(found, "Progressing")
        ready = progressing is not None and progressing.reason == "NewReplicaSetAvailable"
        return found if ready and found.status.observedGeneration == found.metadata.generation else None

    first = await until(complete, "the first rollout")
    assert first.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert condition(first, "Available").status == "True"

    image = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "outpost-web:2",
                                                             "command": ["sleep", "3600"]}]}}}}  # fmt: skip
    await api.patch(Deployment, "web", image, patch_type=PatchType.MERGE)
    second = await until(complete, "the second rollout")
    assert second.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    pods = [p async for p in api.list(Pod, labels={"app": "web"})]
    running = [p for p in pods if p.metadata.deletionTimestamp is None]
    assert [p.spec.containers[0].image for p in running] == ["outpost-web:2"]

    old = {"spec": {"template": first.spec.template.to_dict()}}
    await api.patch(Deployment, "web", old, patch_type=PatchType.MERGE)
    third = await until(complete, "the rollback")
    assert third.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    sets = [rs async for rs in api.list(ReplicaSet, labels={"app": "web"})]
    assert len(sets) == 2  # the first ReplicaSet was taken again
    by_revision = {rs.metadata.annotations["deployment.kubernetes.io/revision"]: rs for rs in sets}
    assert by_revision["3"].spec.template.spec.containers[0].image == busybox_image
    assert by_revision["3"].spec.replicas == 1
    assert by_revision["2"].spec.replicas == 0


async def test_a_bad_image_keeps_the_old_pods_and_the_rollout_exceeds_its_progress_deadline(
    api: Any, busybox_image: str
) -> None:
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import Event, Pod
    from lightkube.types import PatchType

    await api.create(Deployment.from_dict(deployment("shop", busybox_image, deadline=3)))

    async def available() -> Any:
        found = await api.get(Deployment, "shop")
        return found if (found.status.availableReplicas or 0) == 1 else None

    await until(available, "the first rollout")
    image = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": BAD_IMAGE}]}}}}
    await api.patch(Deployment, "shop", image, patch_type=PatchType.MERGE)

    async def exceeded() -> Any:
        found = await api.get(Deployment, "shop")
        progressing = condition(found, "Progressing")
        return found if progressing is not None and progressing.reason == "ProgressDeadlineExceeded" else None

    failed = await until(exceeded, "ProgressDeadlineExceeded", within=60)
    assert condition(failed, "Progressing").status == "False"
    assert failed.status.availableReplicas == 1  # the old pod still serves
    pods = [p async for p in api.list(Pod, labels={"app": "shop"})]
    waiting = [p.status.containerStatuses[0].state.waiting for p in pods if p.status.containerStatuses]
    assert any(w is not None and w.reason in ("ErrImagePull", "ImagePullBackOff") for w in waiting)
    warnings = [e async for e in api.list(Event, fields={"type": "Warning"})]
    assert any(BAD_IMAGE in (e.message or "") for e in warnings)


async def test_server_side_apply_creates_then_merges_and_refuses_an_unknown_field(kube_api: Any) -> None:
    import httpx
    from lightkube import ApiError, AsyncClient, KubeConfig
    from lightkube.codecs import from_dict
    from lightkube.resources.apps_v1 import Deployment

    async with AsyncClient(KubeConfig.from_file(kube_api.kubeconfig), namespace="default") as api:
        created = await api.apply(from_dict(deployment("api", "app:1")), field_manager="test")
        assert created.metadata.generation == 1
        changed = deployment("api", "app:2", replicas=3)
        applied = await api.apply(from_dict(changed), field_manager="test")
        assert applied.spec.replicas == 3
        assert applied.metadata.generation == 2
        wrong = deployment("api", "app:3")
        wrong["spec"]["replicaz"] = 2
        async with httpx.AsyncClient(base_url=kube_api.url) as http:  # lightkube's models would drop the field
            refused = await http.patch(
                "/apis/apps/v1/namespaces/default/deployments/api",
                params={"fieldManager": "test"},
                content=json.dumps(wrong),
                headers={"content-type": "application/apply-patch+yaml"},
            )
        assert refused.status_code == 422
        assert "replicaz" in refused.json()["message"]
        unmatched = deployment("other", "app:1")
        unmatched["spec"]["selector"] = {"matchLabels": {"app": "else"}}
        with pytest.raises(ApiError) as raised:
            await api.create(from_dict(unmatched))
        assert "selector" in raised.value.status.message
        found = await api.get(Deployment, "api")
        assert found.spec.template.spec.containers[0].image == "app:2"


async def test_discovery_names_the_core_and_apps_resources(kube_api: Any) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=kube_api.url) as http:
        versions = (await http.get("/api")).json()
        groups = (await http.get("/apis")).json()
        apps = (await http.get("/apis/apps/v1")).json()
    assert versions["versions"] == ["v1"]
    assert [g["name"] for g in groups["groups"]] == ["apps"]
    deployments = next(r for r in apps["resources"] if r["name"] == "deployments")
    assert deployments["kind"] == "Deployment"
    assert "deploy" in deployments["shortNames"]


async def test_the_pods_of_a_node_taken_as_lost_whose_kubelet_was_only_slow_are_ready_again(
    api: Any, busybox_image: str, kube_cluster: Any
) -> None:
    """On a loaded machine a kubelet can miss the node grace: the node lifecycle controller marks the node Unknown
    and its pods not ready; the kubelet's next heartbeat posts its running pods' status again (a real kubelet's
    status sync), or a Deployment would stay unavailable for good."""
    import copy

    from lightkube.resources.apps_v1 import Deployment

    await api.create(Deployment.from_dict(deployment("api", busybox_image)))

    async def available() -> Any:
        found = await api.get(Deployment, "api")
        return found if (found.status.availableReplicas or 0) == 1 else None

    await until(available, "the first rollout")
    pod = next(p for p in kube_cluster.pods("default") if p["metadata"]["labels"].get("app") == "api")
    node = pod["spec"]["nodeName"]

    async def taken_as_lost() -> None:  # what the node lifecycle controller does to a silent node
        store = kube_cluster.store
        found = copy.deepcopy(store.get("nodes", "", node))
        ready = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
        found["status"]["conditions"] = [{**ready, "status": "Unknown", "reason": "NodeStatusUnknown"}]
        await store.update("nodes", "", node, found, sub="status")
        marked = copy.deepcopy(store.get("pods", "default", pod["metadata"]["name"]))
        marked["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        await store.update("pods", "default", pod["metadata"]["name"], marked, sub="status")

    kube_cluster.call(taken_as_lost)

    async def ready_again() -> bool:  # only the kubelet sets it back
        from lightkube.resources.core_v1 import Pod

        found = await api.get(Pod, pod["metadata"]["name"])
        return any(c.type == "Ready" and c.status == "True" for c in found.status.conditions or [])

    await until(ready_again, "the kubelet to post the pod ready again", within=15)
    await until(available, "the Deployment to be available again", within=15)
