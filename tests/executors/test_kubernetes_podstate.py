"""How a step pod's status is read (executors/kubernetes/podstate.py, pure): what is still coming, what is the
step's own exit code, and what is a failure of the pod itself that the user must be told about."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube.fixtures import need_kubernetes_packages


def reading(status: dict[str, Any], deleting: bool = False) -> Any:
    need_kubernetes_packages()
    from lightkube.resources.core_v1 import Pod

    from outpost.executors.kubernetes import podstate

    meta: dict[str, Any] = {"name": "p", **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
    pod = Pod.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                         "spec": {"containers": [{"name": "step"}]}, "status": status})  # fmt: skip
    return podstate.read(pod)


def container(state: dict[str, Any]) -> dict[str, Any]:
    return {"containerStatuses": [{"name": "step", "image": "i", "imageID": "", "ready": False, "restartCount": 0,
                                   "state": state}]}  # fmt: skip


def test_a_step_that_exited_gives_its_own_code_and_no_failure() -> None:
    seen = reading({"phase": "Failed", **container({"terminated": {"exitCode": 3, "reason": "Error"}})})
    assert seen.exit_code == 3
    assert seen.failure() is None


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"phase": "Failed", **container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})}, "OOMKilled"),
        ({"phase": "Failed", "reason": "DeadlineExceeded", "message": "active longer than 60s"}, "DeadlineExceeded"),
        ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}, "evicted"),
        ({"phase": "Running", "reason": "NodeLost", "message": "Node n is unresponsive"}, "was lost: Node n"),
        ({"phase": "Failed", "reason": "Shutdown"}, "failed: Shutdown"),
    ],
)
def test_a_pod_that_failed_by_itself_says_why(status: dict[str, Any], words: str) -> None:
    failure = reading(status).failure()
    assert failure is not None
    assert words in failure


def test_pull_problems_and_scheduling_are_told_apart() -> None:
    pulling = reading({"phase": "Pending", **container({"waiting": {"reason": "ImagePullBackOff", "message": "m"}})})
    assert pulling.pull_failing
    assert not pulling.hopeless
    invalid = reading({"phase": "Pending", **container({"waiting": {"reason": "InvalidImageName", "message": "x"}})})
    assert invalid.hopeless
    unplaced = reading({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}]})  # fmt: skip
    assert unplaced.unschedulable == "0/3 nodes"
    assert reading({"phase": "Running"}, deleting=True).deleting
    silent = reading({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                      **container({"running": {}})})  # fmt: skip
    assert silent.not_ready  # no probes on step pods: only a silent node makes a running one not ready
