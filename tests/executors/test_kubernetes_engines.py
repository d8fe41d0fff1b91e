"""A runner with engine pods, at its start: what an earlier run of it left goes, except the builds whose engine pod it
is about to adopt (their folder says so): those engine pods, their Secrets and their step pods stay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.kube import fixtures

kube_api = fixtures.kube_api

pytestmark = pytest.mark.timeout(60)


def _pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def _secret(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels}, "type": "Opaque"}


async def test_a_runners_start_keeps_what_it_will_adopt_and_removes_the_rest_of_its_mark(
    kube_api: Any, tmp_path: Path
) -> None:
    from outpost.executors.kubernetes import objects
    from outpost.executors.kubernetes.executor import KubernetesExecutor
    from tests.kube.cluster import NAMESPACE, WORK_CLAIM

    folder = tmp_path / "runner"
    (folder / "builds" / "b-adopt").mkdir(parents=True)
    (folder / "builds" / "b-adopt" / "engine.json").write_text(json.dumps({"pod": "outpost-engine-b-adopt"}))
    (folder / "builds" / "b-plain").mkdir(parents=True)  # a build without an engine pod: recovered, not adopted
    mark = objects.runner_mark(WORK_CLAIM, str(folder))
    made = {
        "outpost-engine-b-adopt": objects.engine_labels("b-adopt", mark),
        "op-b-adopt-1-main": objects.step_labels("b-adopt", "main", mark),
        "outpost-engine-b-lost": objects.engine_labels("b-lost", mark),  # its folder is gone
        "op-b-plain-1-main": objects.step_labels("b-plain", "main", mark),
        "op-b-other-1-main": objects.step_labels("b-other", "main", "r-another-runner"),
    }

    async def create() -> None:
        for name, labels in made.items():
            await kube_api.store.create("pods", NAMESPACE, _pod(name, labels))
            await kube_api.store.create("secrets", NAMESPACE, _secret(f"{name}-env", labels))

    kube_api.call(create)

    options = kube_api.executor_options(runner_folder=str(folder), engine_image="registry.corp/outpost:1")
    said = await KubernetesExecutor.preflight(options)

    assert said is not None
    assert "removed 2 pod(s) an earlier run of this runner left" in said
    assert "engine pods: registry.corp/outpost:1 (1 build(s) to adopt)" in said
    left = {p["metadata"]["name"] for p in kube_api.pods()}
    assert left == {"outpost-engine-b-adopt", "op-b-adopt-1-main", "op-b-other-1-main"}
    secrets = {s["metadata"]["name"] for s in kube_api.objects("secrets")}
    assert secrets == {f"{name}-env" for name in left}
