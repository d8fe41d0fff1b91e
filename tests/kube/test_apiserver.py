"""The API server emulator is strict where the executor relies on it: schema validation with unknown fields
refused, one monotonic resourceVersion, label and field selectors, watches that resume or answer 410 Gone, optimistic
concurrency, graceful pod deletion and ownerReferences garbage collection. Driven through lightkube, as the executor
drives a real cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.kube import fixtures

kube_api = fixtures.kube_api

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(kube_api: Any) -> AsyncIterator[Any]:
    from lightkube import AsyncClient, KubeConfig

    async with AsyncClient(KubeConfig.from_file(kube_api.kubeconfig), namespace="builds") as api:
        yield api


def pod(name: str, **spec: Any) -> Any:
    from lightkube.resources.core_v1 import Pod

    body = {"containers": [{"name": "c", "image": "busybox"}], **spec}
    return Pod.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                          "spec": body})  # fmt: skip


async def test_an_unknown_field_is_refused_with_its_name(client: Any) -> None:
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Secret

    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "strinData": {"a": "b"}}
    with pytest.raises(ApiError) as raised:
        await client.create(_raw(Secret, body))
    assert raised.value.status.code == 422
    assert "strinData" in raised.value.status.message


def _raw(kind: Any, body: dict[str, Any]) -> Any:
    """An object lightkube sends as it is (its models would drop an unknown field before the server sees it)."""
    from lightkube.generic_resource import create_namespaced_resource

    raw = create_namespaced_resource("", "v1", kind.__name__, kind._api_info.plural)
    return raw.from_dict(body)


async def test_resource_versions_grow_with_every_write_and_lists_carry_the_latest(client: Any) -> None:
    from lightkube.resources.core_v1 import Pod

    first = await client.create(pod("one"))
    second = await client.create(pod("two"))
    labelled = await client.patch(Pod, "one", {"metadata": {"labels": {"x": "y"}}}, patch_type=_merge())
    versions = [int(o.metadata.resourceVersion) for o in (first, second, labelled)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    listed = client.list(Pod)
    names = [p.metadata.name async for p in listed]
    assert names == ["one", "two"]
    assert int(listed.resourceVersion) >= versions[-1]  # (the scheduler may have bound them since)


async def test_label_and_field_selectors_filter_and_an_unknown_field_selector_is_refused(client: Any) -> None:
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Pod

    await client.create(pod("one"))
    await client.create(pod("two"))
    assert [p.metadata.name async for p in client.list(Pod, labels={"app": "two"})] == ["two"]
    assert [p.metadata.name async for p in client.list(Pod, fields={"metadata.name": "one"})] == ["one"]
    with pytest.raises(ApiError) as raised:
        [p async for p in client.list(Pod, fields={"spec.image": "busybox"})]
    assert raised.value.status.code == 400


async def test_a_watch_resumes_after_a_resource_version_and_a_too_old_one_is_gone(kube_api: Any, client: Any) -> None:
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Secret

    from outpost.executors.kubernetes import objects

    first = await client.create(objects.env_secret("one", "builds", "b", "s", {}))
    await client.create(objects.env_secret("two", "builds", "b", "s", {}))
    seen = []
    async with asyncio.timeout(10):
        async for kind, found in client.watch(Secret, resource_version=first.metadata.resourceVersion):
            seen.append((kind, found.metadata.name))
            break
    assert seen == [("ADDED", "two")]  # not "one": it came before the version the watch resumed from

    async def compact() -> None:
        kube_api.store.compact()

    kube_api.call(compact)

    async def follow() -> None:
        async with asyncio.timeout(10):
            async for _ in client.watch(Secret, resource_version=first.metadata.resourceVersion):
                pass

    with pytest.raises(ApiError) as raised:
        await follow()
    assert raised.value.status.code == 410


async def test_an_update_from_a_stale_read_conflicts(client: Any) -> None:
    from lightkube import ApiError
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    claim = await client.get(PersistentVolumeClaim, "outpost-work")
    claim.metadata.labels = {"owner": "build-1"}
    await client.replace(claim)
    claim.metadata.labels = {"owner": "build-2"}  # the same, older, resourceVersion
    with pytest.raises(ApiError) as raised:
        await client.replace(claim)
    assert raised.value.status.code == 409


async def test_a_bound_pod_is_deleted_gracefully_and_its_dependents_go_with_it(kube_api: Any, client: Any) -> None:
    from lightkube.resources.core_v1 import Pod, Secret

    from outpost.executors.kubernetes import objects

    created = await client.create(pod("worker", nodeName="node-a"))
    await client.create(objects.env_secret("worker-env", "builds", "b", "s", {"A": "1"}))
    await client.patch(Secret, "worker-env", objects.owned_by(created), patch_type=_merge())
    await client.delete(Pod, "worker", grace_period=5)
    marked = await client.get(Pod, "worker")  # still there: its (absent) kubelet has not finished it
    assert marked.metadata.deletionTimestamp is not None
    assert marked.metadata.deletionGracePeriodSeconds == 5
    assert [s.metadata.name async for s in client.list(Secret)] == ["worker-env"]
    await client.delete(Pod, "worker", grace_period=0)
    assert [p async for p in client.list(Pod)] == []
    assert [s async for s in client.list(Secret)] == []  # garbage-collected with its owner


async def test_the_scheduler_binds_by_node_selector_and_reports_what_it_cannot_place(client: Any) -> None:
    from lightkube.resources.core_v1 import Event, Pod

    await client.create(pod("fits", nodeSelector={"disk": "hdd"}))
    await client.create(pod("nowhere", nodeSelector={"disk": "tape"}))
    async with asyncio.timeout(10):
        while (await client.get(Pod, "fits")).spec.nodeName is None:
            await asyncio.sleep(0.05)
        while not [e async for e in client.list(Event, fields={"involvedObject.name": "nowhere"})]:
            await asyncio.sleep(0.05)
    assert (await client.get(Pod, "fits")).spec.nodeName == "node-c"
    stuck = await client.get(Pod, "nowhere")
    assert stuck.spec.nodeName is None
    (condition,) = stuck.status.conditions
    assert (condition.type, condition.status, condition.reason) == ("PodScheduled", "False", "Unschedulable")


def _merge() -> Any:
    from lightkube.types import PatchType

    return PatchType.MERGE


async def test_the_runner_is_held_to_its_role(kube_api: Any) -> None:
    import httpx2
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import Node, Pod, Secret

    async with AsyncClient(KubeConfig.from_file(kube_api.runner_kubeconfig), namespace="builds") as runner:
        assert [p async for p in runner.list(Pod)] == []  # granted
        for denied in (runner.list(Node), runner.list(Pod, namespace="default"), runner.watch(Secret)):
            with pytest.raises(httpx2.HTTPStatusError) as raised:  # (lightkube's ApiError but for a watch)
                await _first(denied)
            assert raised.value.response.status_code == 403
    assert kube_api.store.denied == [
        'user cannot list resource "nodes" in API group "" at the cluster scope',
        'user cannot list resource "pods" in API group "" in the namespace "default"',
        'user cannot watch resource "secrets" in API group "" in the namespace "builds"',
    ]


async def _first(items: Any) -> Any:
    async for item in items:
        return item
    return None
