"""Build volumes kept per pipeline (executors/kubernetes/claims.py) and their janitor (janitor.py) on the test
cluster's API, as the runner's service account (held to `runner_role`): builds of a pipeline in a row share its
claim, two at once get different ones, only the holder gives a claim back, branches get claims of their own; the
janitor removes expired and surplus volumes no build holds, never a held one, and gives back what a build this
runner no longer has held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.kube import fixtures

kube_api = fixtures.kube_api

pytestmark = pytest.mark.timeout(60)
DAY = 86400.0


@pytest.fixture
async def client(kube_api: Any) -> AsyncIterator[Any]:
    from lightkube import AsyncClient, KubeConfig

    async with AsyncClient(KubeConfig.from_file(kube_api.runner_kubeconfig), namespace="builds") as api:
        yield api


async def _claims(client: Any) -> dict[str, Any]:
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    found = [c async for c in client.list(PersistentVolumeClaim, labels={"outpost.io/volume": "kept"})]
    found += [c async for c in client.list(PersistentVolumeClaim, labels={"outpost.io/volume": "fresh"})]
    return {c.metadata.name: c for c in found}


async def test_builds_of_a_pipeline_in_a_row_share_its_volume(client: Any) -> None:
    from outpost.executors.kubernetes import claims

    first = await claims.claim(client, "builds", "acme/app", "build-1", size="1Gi")
    assert await claims.release(client, "builds", first.name, "build-1")
    second = await claims.claim(client, "builds", "acme/app", "build-2", size="1Gi")
    assert second == claims.Claimed(first.name, kept=True)


async def test_two_builds_at_once_get_different_volumes_and_only_the_holder_releases(client: Any) -> None:
    from outpost.executors.kubernetes import claims

    made = await claims.claim(client, "builds", "acme/app", "build-0", size="1Gi")  # the pipeline's volume, held
    assert await claims.release(client, "builds", made.name, "build-0")
    taken = await asyncio.gather(
        *(claims.claim(client, "builds", "acme/app", f"build-{i}", size="1Gi") for i in (1, 2, 3))
    )
    assert len({c.name for c in taken}) == 3
    assert [c.kept for c in taken].count(True) == 1  # exactly one got the pipeline's own volume
    assert not await claims.release(client, "builds", made.name, "someone-else")
    for i, claimed in zip((1, 2, 3), taken, strict=True):  # a fresh one goes with its build
        if not claimed.kept:
            await claims.give_back(client, "builds", claimed, f"build-{i}")
    assert set(await _claims(client)) == {made.name}


async def test_branches_get_volumes_of_their_own_named_as_dns_labels(client: Any) -> None:
    from outpost.executors.kubernetes import claims

    long_branch = "feature/" + "a-very-long-branch-name-" * 6
    main = await claims.claim(client, "builds", "acme/app", "b-1", account="acme", branch="main", size="1Gi")
    feature = await claims.claim(client, "builds", "acme/app", "b-2", account="acme", branch=long_branch, size="1Gi")
    whole = await claims.claim(client, "builds", "acme/app", "b-3", account="acme", size="1Gi")

    assert [main.kept, feature.kept, whole.kept] == [True, True, True]  # three keys, three kept volumes, none busy
    assert len({main.name, feature.name, whole.name}) == 3
    assert all(len(c.name) <= 63 for c in (main, feature, whole))
    assert claims.claim_name("acme", "acme/app", long_branch) == feature.name  # stable: the next build finds it
    assert claims.claim_name("acme", "acme/app", long_branch + "x") != feature.name


async def test_a_build_volume_claim_is_valid_and_carries_its_holder_and_last_use(client: Any) -> None:
    import kubernetes_validate

    from outpost.executors.kubernetes import claims

    made = await claims.claim(client, "builds", "acme/app", "b-1", account="acme", size="2Gi", storage_class="fast",
                              runner="r123")  # fmt: skip
    found = (await _claims(client))[made.name]
    body = found.to_dict()
    for server_side in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        body["metadata"].pop(server_side, None)
    body.pop("status", None)
    kubernetes_validate.validate(body, "1.37", strict=True)
    assert body["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "2Gi"}},
        "storageClassName": "fast",
    }
    annotations = body["metadata"]["annotations"]
    assert annotations[claims.HOLDER] == "b-1"
    assert annotations[claims.HOLDER_RUNNER] == "r123"
    assert annotations[claims.VOLUME_OF] == "acme/acme/app"
    assert abs(claims.last_used(found) - time.time()) < 120


async def _used(client: Any, pipeline: str, build: str, *, days_ago: float, hold: bool = False, **more: Any) -> str:
    """A kept volume last used `days_ago` days ago (held by `build` with `hold`)."""
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    from outpost.executors.kubernetes import claims

    made = await claims.claim(client, "builds", pipeline, build, size="1Gi", **more)
    current = await client.get(PersistentVolumeClaim, made.name)
    current.metadata.annotations[claims.LAST_USED] = claims.stamp(time.time() - days_ago * DAY)
    if not hold:
        current.metadata.annotations.pop(claims.HOLDER)
    await client.replace(current)
    return made.name


async def test_the_janitor_removes_an_expired_unheld_volume_and_keeps_a_held_one_and_a_recent_one(client: Any) -> None:
    from outpost.executors.kubernetes import janitor

    expired = await _used(client, "old", "b-1", days_ago=9)
    held = await _used(client, "busy", "b-2", days_ago=30, hold=True)  # a build holds it: never removed
    recent = await _used(client, "new", "b-3", days_ago=2)

    removed = await janitor.sweep(client, "builds", retention=7 * DAY, cap=5, runner="r1", active=set)

    assert [r.name for r in removed] == [expired]
    assert "last used 9.0d ago, longer than the retention (7.0d)" in removed[0].why
    assert set(await _claims(client)) == {held, recent}


async def test_the_janitor_keeps_the_most_recently_used_volumes_of_a_pipeline_within_its_cap(client: Any) -> None:
    from outpost.executors.kubernetes import janitor

    names = {
        days: await _used(client, "acme/app", f"b-{days}", days_ago=days, branch=f"branch-{days}")
        for days in (1, 2, 3, 4)
    }
    other = await _used(client, "acme/other", "b-9", days_ago=5)  # another pipeline's: not counted

    removed = await janitor.sweep(client, "builds", retention=7 * DAY, cap=2, runner="r1", active=set)

    assert sorted(r.name for r in removed) == sorted([names[3], names[4]])  # the least recently used go
    assert all("beyond the cap of 2 volumes per pipeline" in r.why for r in removed)
    assert set(await _claims(client)) == {names[1], names[2], other}


async def test_the_janitor_gives_back_what_a_build_this_runner_no_longer_has_held_and_no_other_runners(
    client: Any,
) -> None:
    from outpost.executors.kubernetes import claims, janitor

    ours = await claims.claim(client, "builds", "acme/app", "lost-build", size="1Gi", runner="r1")
    fresh = await claims.claim(client, "builds", "acme/app", "running-build", size="1Gi", runner="r1")
    orphan = await claims.claim(client, "builds", "acme/app", "lost-build-2", size="1Gi", runner="r1")
    theirs = await claims.claim(client, "builds", "acme/lib", "elsewhere", size="1Gi", runner="r2")
    assert [fresh.kept, orphan.kept] == [False, False]

    removed = await janitor.sweep(client, "builds", retention=7 * DAY, cap=5, runner="r1",
                                  active=lambda: {"running-build"})  # fmt: skip

    assert [r.name for r in removed] == [orphan.name]  # a fresh volume nobody holds any more goes
    left = await _claims(client)
    assert claims.holder_of(left[ours.name]) is None  # given back: the next build of the pipeline takes it
    assert claims.holder_of(left[fresh.name]) == "running-build"
    assert claims.holder_of(left[theirs.name]) == "elsewhere"  # another runner's build: not ours to judge


async def test_a_build_taking_a_volume_the_janitor_is_about_to_remove_wins(client: Any) -> None:
    """The janitor takes a volume with the same conditional update a build uses; reading it free and then finding
    it changed (a build took it), it leaves it."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    from outpost.executors.kubernetes import claims, janitor

    name = await _used(client, "acme/app", "b-1", days_ago=30)
    seen = await client.get(PersistentVolumeClaim, name)  # what the janitor read
    assert (await claims.claim(client, "builds", "acme/app", "b-2", size="1Gi")).kept  # a build takes it meanwhile
    claims.hold(seen, janitor.JANITOR, None)
    with pytest.raises(ApiError) as refused:
        await client.replace(seen)  # the janitor's conditional update, at the resourceVersion it read
    assert refused.value.status.code == 409
    assert await janitor.sweep(client, "builds", retention=7 * DAY, cap=5, runner="r1", active=set) == []
    assert claims.holder_of((await _claims(client))[name]) == "b-2"


def test_a_retention_is_read_as_a_duration_or_refused_with_the_reason() -> None:
    from outpost.executors.kubernetes.janitor import parse_retention

    assert parse_retention("7d") == 7 * DAY
    assert parse_retention("12h") == 12 * 3600
    assert parse_retention("90") == 90
    for bad in ("soon", "0d", "-1h", ""):
        with pytest.raises(ValueError, match=r"duration|more than 0"):
            parse_retention(bad)


def _valid(obj: Any) -> dict[str, Any]:
    import kubernetes_validate

    body: dict[str, Any] = obj.to_dict()
    kubernetes_validate.validate(body, "1.37", strict=True)
    return body


def test_an_engine_pod_mounts_its_build_volume_claim_where_the_engine_has_its_volume() -> None:
    fixtures.need_kubernetes_packages()
    from outpost.executors.kubernetes import objects

    spec = objects.EnginePodSpec(
        name="outpost-engine-b-42", namespace="builds", build_id="b-42", image="registry.corp/outpost:1",
        folder="/var/lib/outpost/builds/b-42", claim="outpost-work", claim_mount="/var/lib/outpost",
        secret="outpost-engine-b-42-task", service_account="outpost-engine", deadline_seconds=600,
        volume_claim="vol-acme-app-0123456789ab", volume_path="/var/lib/outpost/builds/b-42/volume",
    )  # fmt: skip
    body = _valid(objects.engine_pod(spec))
    mounts = body["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "build", "mountPath": "/var/lib/outpost"} in mounts  # the work claim, as before
    assert {"name": "volume", "mountPath": "/var/lib/outpost/builds/b-42/volume"} in mounts
    volumes = {v["name"]: v for v in body["spec"]["volumes"]}
    assert volumes["volume"]["persistentVolumeClaim"] == {"claimName": "vol-acme-app-0123456789ab"}


def test_a_step_pod_mounts_the_build_volume_claim_whole_and_the_tools_from_the_work_claim() -> None:
    fixtures.need_kubernetes_packages()
    from outpost.executors.kubernetes import objects

    spec = objects.StepPodSpec(
        name="op-b-42-1-main", namespace="builds", build_id="b-42", step="main", image="busybox",
        command=["/bin/sh", "-c", "true"], claim="vol-acme-app-0123456789ab", volume_path="",
        volume_mount="/codefresh/volume", tools_path="runner/builds/b-42/scratch/bin",
        tools_mount="/codefresh/outpost/bin", tools_claim="outpost-work", node_name="node-b",
    )  # fmt: skip
    body = _valid(objects.step_pod(spec))
    mounts = body["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0] == {"name": "build", "mountPath": "/codefresh/volume"}  # the claim whole: no subPath
    assert mounts[1]["subPath"] == "runner/builds/b-42/scratch/bin"
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in body["spec"]["volumes"]}
    assert volumes == {"build": "vol-acme-app-0123456789ab", "tools": "outpost-work"}
    assert body["spec"]["nodeName"] == "node-b"


@pytest.mark.parametrize("reuse", ["pipeline", "branch"])
async def test_a_node_choice_for_step_pods_with_build_volume_claims_is_refused_at_start(reuse: str) -> None:
    """Step pods follow their engine pod's node (the claim is ReadWriteOnce): a nodeSelector could never match."""
    fixtures.need_kubernetes_packages()
    import json

    from outpost.errors import ExecutorError
    from outpost.executors.kubernetes.executor import KubernetesExecutor

    options = {"work_claim": "w", "engine_image": "registry.corp/outpost:1", "volume_reuse": reuse,
               "step_pods": json.dumps({"nodeSelector": {"disk": "ssd"}})}  # fmt: skip
    with pytest.raises(ExecutorError, match="step pods follow their engine pod's node"):
        await KubernetesExecutor.preflight(options)
