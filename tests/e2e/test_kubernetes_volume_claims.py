"""Build volumes as claims of their own with engine pods (`--engine-image`, `--volume-reuse pipeline|branch`), end
to end: a real control plane, a real runner process and the test cluster, whose fake kubelets run the engine pods
and their step pods on the real Docker engine. The runner takes the pipeline's (or branch's) claim before it
creates the engine pod, the engine pod and its step pods mount it, and the runner gives it back at the build's end;
the runner's Role is the one the emulator enforces, so a verb missing from it fails these tests."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.e2e.kubernetes import FINISHED, start_kubernetes_runner
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster = containers.dockerd, containers.busybox_image, fixtures.kube_cluster
engine_image = fixtures.engine_image

pytestmark = pytest.mark.timeout(300)
HOLDER, LAST_USED = "outpost.io/claimed-by", "outpost.io/last-used"

# Each build adds its id to a file in the volume and prints what it found; with WAIT=yes it waits (boundedly) for
# the test's go-ahead, so that builds overlap for sure or a runner can be killed mid-step.
PIPELINE = """version: '1.0'
steps:
  main:
    image: {image}
    commands:
      - cd /codefresh/volume
      - echo "$CF_BUILD_ID" >> /codefresh/volume/seen
      - echo "seen:" $(cat /codefresh/volume/seen)
      - touch "/codefresh/volume/waiting-$CF_BUILD_ID"
      - for i in $(seq 1 600); do [ "$WAIT" != yes ] || [ -e "go-$CF_BUILD_ID" ] && break; sleep 0.2; done
      - rm -f "/codefresh/volume/waiting-$CF_BUILD_ID" "/codefresh/volume/go-$CF_BUILD_ID"
"""


class Build:
    def __init__(self, build_id: str, status: str, seen: list[str]) -> None:
        self.id, self.status, self.seen = build_id, status, seen


def _run(control_plane: ControlPlane, branch: str = "main", **variables: str) -> Build:
    pairs = [arg for name, value in variables.items() for arg in ("--var", f"{name}={value}")]
    done = control_plane.cli("run", "app", "--branch", branch, *pairs, timeout=180)
    said = (done.stdout + done.stderr).splitlines()
    line = next((line for line in said if line.startswith("build ")), "")
    assert line, done.stdout + done.stderr
    seen = next((line for line in said if line.startswith("seen:")), "seen:")
    status = "success" if done.returncode == 0 else f"failed: {done.stdout}{done.stderr}"
    return Build(line.split()[1], status, seen.split()[1:])


def _volumes(cluster: Any) -> dict[str, dict[str, Any]]:
    """The build volume claims, by name (the work claim is not one)."""
    return {
        c["metadata"]["name"]: c
        for c in cluster.objects("persistentvolumeclaims")
        if "outpost.io/volume" in c["metadata"].get("labels", {})
    }


def _annotations(cluster: Any, name: str) -> dict[str, str]:
    return dict(_volumes(cluster)[name]["metadata"].get("annotations") or {})


def _given_back(cluster: Any, name: str) -> None:
    """The build's end is reported before its runner gives the volume back: at most seconds later."""
    eventually(lambda: HOLDER not in _annotations(cluster, name) or None, timeout=30, what=f"{name} to be given back")


def _waiting(cluster: Any, count: int) -> list[Path] | None:
    """The claim folders (on the fake kubelets' storage) where `count` builds' steps now wait for the go-ahead."""
    found = sorted(cluster.claim_folder().parent.glob("vol-*/waiting-*"))
    return found if len(found) == count else None


def _go(waiting: list[Path]) -> None:
    for marker in waiting:
        (marker.parent / marker.name.replace("waiting-", "go-")).touch()


def _pipeline(tmp_path: Path, control_plane: ControlPlane, image: str) -> None:
    (tmp_path / "p.yml").write_text(PIPELINE.format(image=image))
    assert control_plane.cli("pipeline", "create", "app", "--file", str(tmp_path / "p.yml")).returncode == 0


def test_builds_in_a_row_share_the_pipelines_claim_and_builds_at_once_get_a_fresh_one_deleted_after(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", engine_image, "--concurrency", "2",
                            "--volume-size", "3Gi")  # fmt: skip
    _pipeline(tmp_path, control_plane, busybox_image)

    first, second = _run(control_plane), _run(control_plane)

    assert (first.status, second.status) == ("success", "success")
    assert first.seen == [first.id]
    assert second.seen == [first.id, second.id]  # the first build's file, in the same claim
    (kept,) = _volumes(kube_cluster)
    claim = _volumes(kube_cluster)[kept]
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    _given_back(kube_cluster, kept)
    assert LAST_USED in _annotations(kube_cluster, kept)
    history = [(e[1], e[3]) for e in list(kube_cluster.store.history) if e[2] == "pods"]
    steps = [p for kind, p in history if kind == "ADDED" and "outpost.io/step" in p["metadata"]["labels"]]
    engine_nodes = {  # the node the scheduler gave each build's engine pod
        p["metadata"]["labels"]["outpost.io/engine"]: p["spec"]["nodeName"]
        for _, p in history
        if "outpost.io/engine" in p["metadata"]["labels"] and p["spec"].get("nodeName")
    }
    assert len(steps) == 2
    for step in steps:  # the claim whole, on the engine pod's node (the claim is ReadWriteOnce)
        assert {"name": "build", "persistentVolumeClaim": {"claimName": kept}} in step["spec"]["volumes"]
        assert step["spec"]["nodeName"] == engine_nodes[step["metadata"]["labels"]["outpost.io/build"]]

    together: list[Build] = []
    runs = [threading.Thread(target=lambda: together.append(_run(control_plane, WAIT="yes"))) for _ in "ab"]
    for thread in runs:
        thread.start()
    waiting = eventually(lambda: _waiting(kube_cluster, 2), timeout=120, what="two builds' steps to be waiting")
    assert len({marker.parent for marker in waiting}) == 2  # two claims
    assert len(_volumes(kube_cluster)) == 2
    _go(waiting)
    for thread in runs:
        thread.join(180)

    assert [b.status for b in together] == ["success", "success"]
    pipelines, fresh = sorted(together, key=lambda b: len(b.seen), reverse=True)
    assert pipelines.seen == [first.id, second.id, pipelines.id]
    assert fresh.seen == [fresh.id]  # a claim of its own, empty
    eventually(lambda: list(_volumes(kube_cluster)) == [kept] or None, timeout=30, what="the fresh claim to go")
    _given_back(kube_cluster, kept)
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pods to be removed")


def test_with_volume_reuse_branch_each_branch_keeps_a_claim_of_its_own(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", engine_image, "--volume-reuse", "branch")
    _pipeline(tmp_path, control_plane, busybox_image)
    long_branch = "feature/" + "a-long-branch-name-" * 5

    main = _run(control_plane, "main")
    feature = _run(control_plane, long_branch)
    main_again = _run(control_plane, "main")

    assert [b.status for b in (main, feature, main_again)] == ["success"] * 3
    assert feature.seen == [feature.id]  # not main's
    assert main_again.seen == [main.id, main_again.id]
    volumes = _volumes(kube_cluster)
    assert len(volumes) == 2
    assert all(len(name) <= 63 for name in volumes)
    assert sorted(v["metadata"]["annotations"]["outpost.io/volume-of"].rpartition("@")[2] for v in volumes.values()) \
        == sorted(["main", long_branch])  # fmt: skip


def test_a_runner_killed_mid_build_keeps_the_builds_claim_held_until_the_adopted_build_ends(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    runner = start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", engine_image)
    _pipeline(tmp_path, control_plane, busybox_image)
    with control_plane.api() as api:
        build_id = str(api.post("/pipelines/app/builds", json={"variables": {"WAIT": "yes"}}).json()["id"])
    waiting = eventually(lambda: _waiting(kube_cluster, 1), timeout=120, what="the step to wait")
    (name,) = _volumes(kube_cluster)
    assert _annotations(kube_cluster, name)[HOLDER] == build_id

    runner.signal(signal.SIGKILL)
    assert runner.wait(15) == -signal.SIGKILL
    assert _annotations(kube_cluster, name)[HOLDER] == build_id  # nobody gave it back
    runner.start()
    eventually(lambda: "adopting its engine pod" in runner.output() or None, timeout=60, what="the adoption")
    eventually(lambda: "build volumes: 1 found" in runner.output() or None, timeout=60,
               what="the janitor's pass at the restarted runner's start")  # fmt: skip
    assert _annotations(kube_cluster, name)[HOLDER] == build_id  # that pass left it held: the build is adopted
    _go(waiting)

    build = control_plane.wait_for(build_id, FINISHED, timeout=120)
    assert build["status"] == "success", build
    _given_back(kube_cluster, name)
    said = f"build {build_id}: build volume {name} released"
    eventually(lambda: said in runner.output() or None, timeout=10, what="the runner to say so")


# `prepare` leaves a file only this run can have made; `test` fails until the test puts `fixed` into the volume.
RESTARTABLE = """version: '1.0'
steps:
  prepare:
    image: {image}
    commands:
      - echo "made by $CF_BUILD_ID" > /codefresh/volume/prepared.txt
  test:
    image: {image}
    commands:
      - cat /codefresh/volume/prepared.txt
      - test -f /codefresh/volume/fixed
"""


def test_a_restart_from_the_failed_step_skips_what_succeeded_on_the_claim_the_original_left(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", engine_image)
    (tmp_path / "r.yml").write_text(RESTARTABLE.format(image=busybox_image))
    assert control_plane.cli("pipeline", "create", "flaky", "--file", str(tmp_path / "r.yml")).returncode == 0
    assert control_plane.cli("run", "flaky", "--branch", "main", timeout=180).returncode == 1
    original = json.loads(control_plane.cli("build", "list", "--pipeline", "flaky", "--json").stdout)[0]
    (name,) = _volumes(kube_cluster)
    _given_back(kube_cluster, name)
    (kube_cluster.claim_folder().parent / name / "fixed").touch()  # the cause of the failure is fixed

    restarted = control_plane.cli("build", "restart", str(original["id"]), "--from-failed", "--json")
    assert restarted.returncode == 0, restarted.stderr
    again = json.loads(restarted.stdout)
    done = control_plane.wait_for(again["id"], {"success", "failure", "error"}, timeout=120)

    assert done["status"] == "success", done
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["prepare"]["status"] == "skipped"  # the mark in the claim named the original, complete
    with control_plane.api() as api:
        log = api.get(f"/builds/{again['id']}/steps/test/log").text
    assert log.startswith(f"made by {original['id']}\n")  # the volume as the original left it
