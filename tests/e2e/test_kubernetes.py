"""A freestyle pipeline end to end on the Kubernetes executor: a real control plane and a real
`outpost runner start --executor kubernetes` process, against the test cluster (API server emulator, fake scheduler,
fake kubelets running each step pod on the tests' real Docker engine). The runner's data folder lives in the work
claim's folder, as it would on the runner StatefulSet's volume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.e2e.kubernetes import created_pods, numbered_lines, sleeping, start_build, start_kubernetes_runner
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually, outpost_env
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster = containers.dockerd, containers.busybox_image, fixtures.kube_cluster

pytestmark = pytest.mark.timeout(240)

PIPELINE = """version: '1.0'
steps:
  write:
    image: {image}
    commands:
      - echo "hello from $(hostname) on $CF_BRANCH" > /codefresh/volume/greeting
      - for i in $(seq 1 500); do echo "line $i"; done
  read:
    image: {image}
    working_directory: /codefresh/volume
    commands:
      - cat greeting
      - echo "last words"
"""

FAILING = """version: '1.0'
steps:
  broken:
    image: {image}
    commands:
      - echo "about to fail"
      - exit 5
  never:
    image: {image}
    commands:
      - echo "not reached"
"""


def test_a_freestyle_pipeline_runs_each_step_in_its_own_pod_on_the_shared_volume(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster)
    (tmp_path / "k.yml").write_text(PIPELINE.format(image=busybox_image))
    assert control_plane.cli("pipeline", "create", "pods", "--file", str(tmp_path / "k.yml")).returncode == 0

    run = control_plane.cli("run", "pods", "--branch", "main", timeout=180)

    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert numbered_lines(run.stdout) == [f"line {i}" for i in range(1, 501)]  # each exactly once, in order
    greeting = next(line for line in lines if line.startswith("hello from "))
    assert greeting.startswith("hello from ")
    assert greeting.endswith(" on main")  # written by one pod, read by the next through the claim
    assert "last words" in run.stdout
    build_id = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]["id"]
    created = created_pods(kube_cluster)
    assert [p["metadata"]["labels"]["outpost.io/step"] for p in created] == ["write", "read"]
    assert all(p["metadata"]["labels"]["outpost.io/build"] == build_id for p in created)
    assert kube_cluster.pods() == []  # nothing of the build is left in the cluster
    assert kube_cluster.objects("secrets") == []


def test_a_failing_step_pod_fails_the_build_with_its_exit_code(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster)
    (tmp_path / "f.yml").write_text(FAILING.format(image=busybox_image))
    assert control_plane.cli("pipeline", "create", "failing", "--file", str(tmp_path / "f.yml")).returncode == 0

    run = control_plane.cli("run", "failing", timeout=180)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "about to fail" in run.stdout
    assert "not reached" not in run.stdout
    build = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]
    assert build["status"] == "failure"
    assert kube_cluster.pods() == []


def test_cancel_deletes_the_step_pod_and_the_build_ends_terminated_once_it_is_gone(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster)
    seconds = str(300 + uuid.uuid4().int % 9000)  # a sleep no other test runs
    build_id = start_build(control_plane, "sleepy", SLEEPY.format(image=busybox_image, seconds=seconds))
    claim = kube_cluster.claim_folder()
    eventually(lambda: list(claim.glob("runner/volumes/*/started")) or None, timeout=60, what="the step pod to run")
    eventually(lambda: sleeping(seconds) or None, timeout=30, what="the sleep to start")

    cancelled = control_plane.cli("build", "cancel", build_id, "--json", timeout=60)

    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "terminated"
    assert kube_cluster.pods() == []  # the step was over only once its pod was gone
    assert sleeping(seconds) == []


def test_a_runner_killed_mid_step_removes_its_step_pod_when_restarted_and_the_build_ends_error(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
) -> None:
    """What a runner restart does today (the engine runs in the runner, so the build cannot go on: docs say so)."""
    runner = start_kubernetes_runner(start_runner, kube_cluster)
    seconds = str(300 + uuid.uuid4().int % 9000)
    build_id = start_build(control_plane, "sleepy", SLEEPY.format(image=busybox_image, seconds=seconds))
    claim = kube_cluster.claim_folder()
    eventually(lambda: list(claim.glob("runner/volumes/*/started")) or None, timeout=60, what="the step pod to run")
    eventually(lambda: sleeping(seconds) or None, timeout=30, what="the sleep to start")

    assert len(kube_cluster.pods()) == 1
    runner.signal(signal.SIGKILL)  # the runner pod killed: its step pod runs on
    runner.wait(10)
    assert len(kube_cluster.pods()) == 1
    runner.start()

    build = control_plane.wait_for(build_id, {"success", "failure", "error", "terminated"}, timeout=120)
    assert build["status"] == "error"
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the step pod to be removed")
    eventually(lambda: sleeping(seconds) == [], timeout=30, what="the step's process to end")
    assert "removed 1 pod(s) an earlier run of this runner left" in runner.output()


SLEEPY = """version: '1.0'
steps:
  main:
    image: {image}
    commands:
      - touch /codefresh/volume/started
      - sleep {seconds}
"""


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ((), "the Kubernetes executor needs --work-claim"),
        (("--work-claim", "w", "--kubeconfig", "/nonexistent/kubeconfig"), "cannot read the Kubernetes configuration"),
        (("--work-claim", "not-there"), 'read the work claim not-there: 404 persistentvolumeclaims "not-there" not'),
    ],
)
def test_a_runner_that_cannot_use_the_cluster_exits_at_start_with_the_reason(
    tmp_path: Path, kube_cluster: Any, extra: tuple[str, ...], reason: str
) -> None:
    kubeconfig = () if "--kubeconfig" in extra else ("--kubeconfig", str(kube_cluster.runner_kubeconfig))
    command = [sys.executable, "-m", "outpost", "runner", "start", "--url", "http://127.0.0.1:9", "--token", "t",
               "--data-dir", str(tmp_path / "runner"), "--executor", "kubernetes", *kubeconfig, *extra]  # fmt: skip
    done = subprocess.run(command, env=outpost_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert reason in done.stderr
    assert "Traceback" not in done.stderr
