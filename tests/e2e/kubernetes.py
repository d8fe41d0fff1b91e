"""What the Kubernetes end-to-end tests share: a runner process started against the test cluster, a build started
and its log read through the control plane, and looks at the pods the cluster was asked for and at the step
processes its fake kubelets run on this host."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.components import sleeping
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually

FINISHED = {"success", "failure", "error", "terminated"}
ENGINE = "outpost.io/engine"  # the label on an engine pod, its value the build's id

# A hundred numbered lines, then a sleep long enough to be interrupted; `started` tells the test the step runs.
SLEEPY = """version: '1.0'
steps:
  main:
    image: {image}
    commands:
      - for i in $(seq 1 100); do echo "line $i"; done
      - touch /codefresh/volume/started
      - sleep {seconds}
"""


def start_kubernetes_runner(start_runner: Callable[..., RunnerProcess], cluster: Any, *more: str) -> RunnerProcess:
    """A runner with the Kubernetes executor in the test cluster's `builds` namespace, its data folder in the work
    claim's folder as it would be on the runner StatefulSet's volume; `more` are further `runner start` options."""
    claim = cluster.claim_folder()
    return start_runner(
        "--executor", "kubernetes", "--kubeconfig", str(cluster.runner_kubeconfig), "--namespace", "builds",
        "--work-claim", "outpost-work", "--work-claim-path", str(claim), "--data-dir", str(claim / "runner"), *more,
    )  # fmt: skip


def start_build(control_plane: ControlPlane, name: str, yaml: str) -> str:
    """Creates the pipeline `name` from `yaml` and requests a build of it, without waiting; returns the build's id."""
    with control_plane.api() as api:
        assert api.post("/pipelines", json={"name": name, "yaml": yaml}).status_code == 201
        return str(api.post(f"/pipelines/{name}/builds", json={"variables": {}}).json()["id"])


def start_sleepy_build(control_plane: ControlPlane, image: str) -> tuple[str, str]:
    """Starts a build of SLEEPY with a sleep no other test runs (so `sleeping` finds this one's process alone);
    returns the build's id and the sleep's seconds."""
    seconds = str(300 + uuid.uuid4().int % 9000)
    return start_build(control_plane, "sleepy", SLEEPY.format(image=image, seconds=seconds)), seconds


def build_log(control_plane: ControlPlane, build_id: str) -> str:
    shown = control_plane.cli("build", "logs", build_id)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def numbered_lines(text: str) -> list[str]:
    """The `line N` lines a test pipeline printed, in the order the log has them (to check each came once)."""
    return [line for line in text.splitlines() if line.startswith("line ")]


def created_pods(cluster: Any) -> list[dict[str, Any]]:
    """Every pod the cluster was asked to create, in order, including those already gone."""
    return [e[3] for e in list(cluster.store.history) if e[1] == "ADDED" and e[2] == "pods"]


def engine_pods(cluster: Any) -> list[dict[str, Any]]:
    """The engine pods the cluster has now."""
    return [p for p in cluster.pods() if ENGINE in p["metadata"]["labels"]]


def wait_for_engine_pod_step_to_sleep(cluster: Any, seconds: str) -> None:
    """Waits until an engine pod's SLEEPY step (its volume a claim of its own, `vol-*`) has started its sleep."""
    claim = cluster.claim_folder()
    eventually(lambda: list(claim.parent.glob("vol-*/started")) or None, timeout=90, what="the step to run")
    eventually(lambda: sleeping(seconds) or None, timeout=30, what="the sleep to start")
