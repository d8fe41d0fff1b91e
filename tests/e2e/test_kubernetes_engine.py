"""Builds in engine pods (`outpost runner start --executor kubernetes --engine-image …`), end to end: a real control
plane, a real runner process and the test cluster, whose fake kubelets run the engine pod (this machine's Python and
Outpost in an image, `fixtures.engine_image`) and the step pods it creates on the real Docker engine. The engine pod
reaches the emulated API in-cluster (a projected service account token, over TLS) and the control plane itself."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.e2e.kubernetes import (
    ENGINE,
    FINISHED,
    SLEEPY,
    build_log,
    created_pods,
    engine_pods,
    numbered_lines,
    sleeping,
    start_build,
    start_kubernetes_runner,
    start_sleepy_build,
    wait_for_engine_pod_step_to_sleep,
)
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.e2e.test_kubernetes import PIPELINE
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster = containers.dockerd, containers.busybox_image, fixtures.kube_cluster
engine_image = fixtures.engine_image

pytestmark = pytest.mark.timeout(300)

# Waits (boundedly) for the test's go-ahead, so the runner can be killed and restarted while the step runs.
HELD = """version: '1.0'
steps:
  first:
    image: {image}
    commands:
      - for i in $(seq 1 200); do echo "line $i"; done
      - touch /codefresh/volume/started
      - for i in $(seq 1 600); do [ -e /codefresh/volume/go ] && break; sleep 0.2; done
      - for i in $(seq 201 400); do echo "line $i"; done
  second:
    image: {image}
    commands:
      - echo "last words"
"""


def start_engine_runner(start_runner: Callable[..., RunnerProcess], cluster: Any, image: str) -> RunnerProcess:
    return start_kubernetes_runner(start_runner, cluster, "--engine-image", image)


def test_a_two_step_build_runs_in_an_engine_pod_that_owns_its_step_pods(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_engine_runner(start_runner, kube_cluster, engine_image)
    (tmp_path / "k.yml").write_text(PIPELINE.format(image=busybox_image))
    assert control_plane.cli("pipeline", "create", "pods", "--file", str(tmp_path / "k.yml")).returncode == 0

    run = control_plane.cli("run", "pods", "--branch", "main", timeout=180)

    assert run.returncode == 0, run.stdout + run.stderr
    assert numbered_lines(run.stdout) == [f"line {i}" for i in range(1, 501)]  # each exactly once, in order
    assert "last words" in run.stdout
    build_id = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]["id"]
    created = created_pods(kube_cluster)
    engines = [p for p in created if ENGINE in p["metadata"]["labels"]]
    steps = [p for p in created if "outpost.io/step" in p["metadata"]["labels"]]
    assert len(engines) == 1
    engine = engines[0]
    assert engine["metadata"]["labels"][ENGINE] == build_id
    assert engine["spec"]["serviceAccountName"] == "outpost-engine"
    assert [p["metadata"]["labels"]["outpost.io/step"] for p in steps] == ["write", "read"]
    for step in steps:  # created by the engine pod, as its dependents (the API refuses an owner that is not there)
        assert step["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": engine["metadata"]["name"], "uid": engine["metadata"]["uid"]}
        ]
        assert step["spec"]["automountServiceAccountToken"] is False
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
    assert kube_cluster.objects("secrets") == []
    builds = kube_cluster.claim_folder() / "runner" / "builds"  # removed by the runner after the pods
    eventually(lambda: list(builds.glob("*")) == [], timeout=30, what="the build folder to be removed")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_build_survives_a_runner_killed_or_stopped_mid_step_and_completes_with_every_line_once(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
    stop: signal.Signals,
) -> None:
    runner = start_engine_runner(start_runner, kube_cluster, engine_image)
    build_id = start_build(control_plane, "held", HELD.format(image=busybox_image))
    claim = kube_cluster.claim_folder()
    started = eventually(lambda: list(claim.parent.glob("vol-*/started")) or None, timeout=90,
                         what="the first step to run")  # fmt: skip

    runner.signal(stop)  # the runner pod killed, or stopped for an upgrade: its engine pod carries the build on
    assert runner.wait(15) in (-signal.SIGKILL, 0)  # a stopping runner does not wait for builds in engine pods
    assert len(engine_pods(kube_cluster)) == 1
    runner.start()
    eventually(lambda: "adopting its engine pod" in runner.output() or None, timeout=60, what="the adoption")
    (started[0].parent / "go").touch()

    build = control_plane.wait_for(build_id, FINISHED, timeout=120)

    assert build["status"] == "success", build
    log = build_log(control_plane, build_id)
    # Each exactly once, in order, across the restart.
    assert numbered_lines(log) == [f"line {i}" for i in range(1, 401)]
    assert "last words" in log
    engines = [p for p in created_pods(kube_cluster) if ENGINE in p["metadata"]["labels"]]
    assert len(engines) == 1  # one engine pod ran the whole build
    assert "(1 build(s) to adopt)" in runner.output()
    assert "an earlier run of this runner left" not in runner.output()  # neither the engine pod nor its step pod
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
    assert kube_cluster.objects("secrets") == []


def test_an_engine_pod_deleted_from_outside_ends_the_build_error_with_the_reason(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_engine_runner(start_runner, kube_cluster, engine_image)
    build_id, seconds = start_sleepy_build(control_plane, busybox_image)
    wait_for_engine_pod_step_to_sleep(kube_cluster, seconds)
    engine = engine_pods(kube_cluster)[0]["metadata"]["name"]

    deleted_at = time.monotonic()
    kube_cluster.delete_pod(engine)  # kubectl delete pod: graceful, as a person or a controller would

    build = control_plane.wait_for(build_id, FINISHED, timeout=90)
    ended_after = time.monotonic() - deleted_at
    assert build["status"] == "error"
    reason = f"the engine pod {engine} was deleted from outside"
    assert reason in build["message"]
    log = build_log(control_plane, build_id)
    assert f"[outpost] {reason}" in log
    assert numbered_lines(log) == [f"line {i}" for i in range(1, 101)]  # what was printed before: exactly once
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the step pod to be removed")
    eventually(lambda: sleeping(seconds) == [], timeout=30, what="the step's process to end")
    assert kube_cluster.objects("secrets") == []
    print(f"the build ended error {ended_after:.1f}s after its engine pod was deleted")


def test_cancel_reaches_the_engine_pod_which_deletes_the_step_pod_and_the_build_ends_terminated(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_engine_runner(start_runner, kube_cluster, engine_image)
    build_id, seconds = start_sleepy_build(control_plane, busybox_image)
    wait_for_engine_pod_step_to_sleep(kube_cluster, seconds)

    cancelled = control_plane.cli("build", "cancel", build_id, "--json", timeout=60)

    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "terminated"
    assert sleeping(seconds) == []  # the step was over only once its pod was gone
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
    assert kube_cluster.objects("secrets") == []


def test_an_engine_image_with_an_invalid_name_ends_the_build_error_at_once_saying_so(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
) -> None:
    start_engine_runner(start_runner, kube_cluster, "Not A Valid Image!")
    build_id = start_build(control_plane, "sleepy", SLEEPY.format(image=busybox_image, seconds="1"))

    build = control_plane.wait_for(build_id, FINISHED, timeout=60)

    assert build["status"] == "error"
    assert "the engine image Not A Valid Image!: " in build["message"]
    assert "invalid reference format" in build["message"]
    assert "[outpost] the engine image Not A Valid Image!" in build_log(control_plane, build_id)
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
    assert kube_cluster.objects("secrets") == []


def _engine_processes(build_id: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
            if b"outpost.runner.enginepod" in command and build_id.encode() in command:  # its folder names it
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_an_engine_killed_mid_step_ends_the_build_error_with_its_exit_code_and_every_line_once(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    start_engine_runner(start_runner, kube_cluster, engine_image)
    build_id, seconds = start_sleepy_build(control_plane, busybox_image)
    wait_for_engine_pod_step_to_sleep(kube_cluster, seconds)
    (engine,) = _engine_processes(build_id)  # the engine pod's process, on this host as the fake kubelet runs it

    os.kill(engine, signal.SIGKILL)  # a crash: the pod ends Failed, exit code 137

    build = control_plane.wait_for(build_id, FINISHED, timeout=90)
    assert build["status"] == "error"
    assert "failed (exit code 137)" in build["message"]
    log = build_log(control_plane, build_id)
    assert "[outpost] the engine pod outpost-engine-" in log
    assert numbered_lines(log) == [f"line {i}" for i in range(1, 101)]
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the step pod to be removed")
    eventually(lambda: sleeping(seconds) == [], timeout=30, what="the step's process to end")


# Prints a hundred lines, waits for the test's go-ahead, then prints a hundred more and the build's secret, and sleeps.
LAST_WORDS = """version: '1.0'
steps:
  main:
    image: {image}
    commands:
      - for i in $(seq 1 100); do echo "line $i"; done
      - touch /codefresh/volume/started
      - for i in $(seq 1 600); do [ -e /codefresh/volume/go ] && break; sleep 0.1; done
      - for i in $(seq 101 200); do echo "line $i"; done
      - echo "deploying with $DEPLOY_TOKEN"
      - touch /codefresh/volume/printed
      - sleep {seconds}
"""


def test_what_a_step_printed_after_its_engine_s_last_read_reaches_the_log_masked_when_the_engine_is_killed(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    """The engine is frozen (SIGSTOP) before the step prints its second hundred lines, then killed: it never read
    them. The runner copies them from the step pod's output file, masked as the engine would have."""
    start_engine_runner(start_runner, kube_cluster, engine_image)
    seconds = str(300 + uuid.uuid4().int % 9000)
    (tmp_path / "p.yml").write_text(LAST_WORDS.format(image=busybox_image, seconds=seconds))
    created = control_plane.cli(
        "pipeline", "create", "last-words", "--file", str(tmp_path / "p.yml"), "--secret-var", "DEPLOY_TOKEN=tok-93f1c7"
    )
    assert created.returncode == 0, created.stderr
    with control_plane.api() as api:
        build_id = str(api.post("/pipelines/last-words/builds", json={"variables": {}}).json()["id"])
    claim = kube_cluster.claim_folder()
    started = eventually(lambda: list(claim.parent.glob("vol-*/started")) or None, timeout=90,
                         what="the step to run")  # fmt: skip
    (engine,) = _engine_processes(build_id)

    os.kill(engine, signal.SIGSTOP)  # it reads nothing more from here on
    (started[0].parent / "go").touch()
    eventually(lambda: (started[0].parent / "printed").exists() or None, timeout=30, what="the last words")
    eventually(lambda: sleeping(seconds) or None, timeout=30, what="the sleep to start")
    os.kill(engine, signal.SIGKILL)

    build = control_plane.wait_for(build_id, FINISHED, timeout=90)
    assert build["status"] == "error"
    assert "failed (exit code 137)" in build["message"]
    log = build_log(control_plane, build_id)
    assert numbered_lines(log) == [f"line {i}" for i in range(1, 201)]  # each exactly once, in order
    assert "deploying with *****" in log
    assert "tok-93f1c7" not in log
    assert "[outpost] the engine pod outpost-engine-" in log
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the step pod to be removed")
    eventually(lambda: sleeping(seconds) == [], timeout=30, what="the step's process to end")


def test_an_engine_pod_past_its_memory_limit_ends_the_build_error_as_oom_killed(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    """--engine-pods' resources reach the engine pod; 24Mi is far less than Python and Outpost's imports take."""
    limits = json.dumps({"resources": {"limits": {"memory": "24Mi"}}})
    start_kubernetes_runner(start_runner, kube_cluster, "--engine-image", engine_image, "--engine-pods", limits)
    build_id = start_build(control_plane, "sleepy", SLEEPY.format(image=busybox_image, seconds="1"))

    build = control_plane.wait_for(build_id, FINISHED, timeout=90)

    assert build["status"] == "error"
    assert "the engine's container was killed for using more memory than its limit (OOMKilled)" in build["message"]
    engines = [p for p in created_pods(kube_cluster) if ENGINE in p["metadata"]["labels"]]
    assert [e["spec"]["containers"][0]["resources"] for e in engines] == [{"limits": {"memory": "24Mi"}}]
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
