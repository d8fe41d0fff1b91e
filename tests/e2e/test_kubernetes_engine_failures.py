"""Engine pods that cannot carry their build, end to end: a real control plane, `outpost runner start --executor
kubernetes --engine-image …` and the test cluster. The engine pod's node lost (its fake kubelet stopped, its
containers with it) and an engine image no registry has: each ends the build `error` with the reason in its message
and its log, within the timeouts given on the command line (`--node-lost-timeout`, `--pull-timeout`), and leaves
nothing in the cluster."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests import containers
from tests.e2e.kubernetes import (
    FINISHED,
    SLEEPY,
    build_log,
    engine_pods,
    numbered_lines,
    sleeping,
    start_build,
    start_kubernetes_runner,
    start_sleepy_build,
)
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster = containers.dockerd, containers.busybox_image, fixtures.kube_cluster
engine_image = fixtures.engine_image

pytestmark = pytest.mark.timeout(300)


def test_an_engine_pod_whose_node_is_lost_ends_the_build_error_as_node_lost(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    # Pinned to one node, as with a ReadWriteOnce claim: the step pod is lost with the engine pod.
    start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", engine_image, "--node-lost-timeout", "3",
                            "--node-name", "node-b")  # fmt: skip
    build_id, seconds = start_sleepy_build(control_plane, busybox_image)
    eventually(lambda: sleeping(seconds) or None, timeout=90, what="the step's sleep to start")
    # Every line printed so far is delivered: what a lost engine had not read yet, nobody can (the runner does not
    # read step output).
    eventually(lambda: "line 100" in build_log(control_plane, build_id) or None, timeout=30, what="the lines delivered")
    (engine,) = engine_pods(kube_cluster)
    node = engine["spec"]["nodeName"]
    assert {p["spec"]["nodeName"] for p in kube_cluster.pods()} == {node}

    lost_at = time.monotonic()
    kube_cluster.stop_kubelet(node)  # the node is gone: the engine process with it, and nothing reports on it

    build = control_plane.wait_for(build_id, FINISHED, timeout=120)
    ended_after = time.monotonic() - lost_at
    assert build["status"] == "error", build
    reason = f"the node {node} running the engine pod {engine['metadata']['name']} stopped answering for 3s (node lost)"
    assert reason in build["message"]
    log = build_log(control_plane, build_id)
    assert f"[outpost] {reason}" in log
    assert numbered_lines(log) == [f"line {i}" for i in range(1, 101)]  # what was printed before: exactly once
    # The engine pod and the step pod force-deleted (their kubelet will never finish a graceful deletion).
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine and step pods to be removed")
    eventually(lambda: sleeping(seconds) == [], timeout=30, what="the step's process to end")
    assert kube_cluster.objects("secrets") == []
    print(f"the build ended error {ended_after:.1f}s after its engine pod's node was lost")


def test_an_engine_image_no_registry_has_ends_the_build_error_with_the_pull_reason(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
) -> None:
    image = f"localhost:1/outpost-test/no-such-engine:{uuid.uuid4().hex[:8]}"  # nothing listens on port 1
    start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", image, "--pull-timeout", "3")
    build_id = start_build(control_plane, "sleepy", SLEEPY.format(image=busybox_image, seconds="1"))

    build = control_plane.wait_for(build_id, FINISHED, timeout=90)

    assert build["status"] == "error", build
    reason = f"the engine image {image} could not be pulled for 3s ("
    assert reason in build["message"]
    assert "ErrImagePull" in build["message"] or "ImagePullBackOff" in build["message"]
    assert f"[outpost] {reason}" in build_log(control_plane, build_id)
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
    assert kube_cluster.objects("secrets") == []
