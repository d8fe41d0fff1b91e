"""Faults: a runner killed, the control plane restarted, a build cancelled — nothing lost, nothing stuck."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from outpost.runner.outbox import read_lease
from outpost.wire import LEASE_HEADER
from tests.e2e.processes import (
    ControlPlane,
    Process,
    RunnerProcess,
    eventually,
    launch_runner,
    listening_inodes,
    socket_inodes,
)
from tests.executors.test_local import _zombie

LEASE_TTL = 3.0  # what tests/e2e/processes.FAST gives the control plane


def pipeline(cp: ControlPlane, name: str, commands: list[str]) -> None:
    yaml = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands:\n"
    yaml += "".join(f"      - {json.dumps(c)}\n" for c in commands)
    with cp.api() as api:
        r = api.post("/pipelines", json={"name": name, "yaml": yaml})
        assert r.status_code == 201, r.text


def run(cp: ControlPlane, name: str, **variables: str) -> str:
    with cp.api() as api:
        r = api.post(f"/pipelines/{name}/builds", json={"variables": variables})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def step_status(cp: ControlPlane, build_id: str, step: str) -> str | None:
    steps = cp.build(build_id)["steps"] or []
    return next((s["status"] for s in steps if s["name"] == step), None)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _zombie(pid)


def test_a_runner_killed_mid_build_leaves_the_build_as_runner_lost_and_its_lease_refused(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    pidfile = tmp_path / "step.pid"
    runner = start_runner()
    pipeline(control_plane, "long", [f"sleep 300 & echo $! > {pidfile}; wait"])
    build_id = run(control_plane, "long")
    eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, what="the step to start")
    eventually(lambda: step_status(control_plane, build_id, "main") == "running", timeout=10, what="step running")
    runner_token = json.loads((runner.data_dir / "runner.json").read_text())["token"]
    task = read_lease(runner.data_dir / "builds" / build_id / "outbox", runner_token).model_dump()

    runner.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    build = control_plane.wait_for(build_id, {"error", "success", "failure", "terminated"}, timeout=LEASE_TTL + 10)

    assert build["status"] == "error"
    assert build["message"] == "runner lost"
    assert time.monotonic() - killed_at < LEASE_TTL + 5
    assert step_status(control_plane, build_id, "main") == "error"
    with httpx.Client(base_url=control_plane.url) as client:
        late = client.post(f"/api/runner/v1/builds/{build_id}/heartbeat", headers=lease_headers(task))
    assert late.status_code == 409

    # The step's process outlived the killed runner; the runner, restarted, ends it and gives up the build.
    step_pid = int(pidfile.read_text())
    assert alive(step_pid)
    restarted = start_runner(name="runner")
    eventually(lambda: not alive(step_pid), timeout=20, what="the orphaned step to be ended")
    eventually(lambda: not list(restarted.build_folders()), timeout=20, what="the old build folder to go")
    assert control_plane.build(build_id)["status"] == "error"


def test_a_control_plane_restart_mid_build_loses_no_log_line_and_doubles_none(
    tmp_path: Path, processes: list[Process]
) -> None:
    # Down for less than the lease TTL (a restart takes seconds): the runner's own lease deadline does not pass,
    # so its step runs on. The reaper gives every lease a whole TTL after the start-up before it ends any.
    control_plane = ControlPlane(tmp_path, OUTPOST_LEASE_TTL="15")
    processes.append(control_plane)
    control_plane.start()
    marker = tmp_path / "halfway"
    launch_runner(processes, tmp_path, control_plane.url, control_plane.install_token())
    pipeline(
        control_plane,
        "chatty",
        [
            "for i in $(seq 1 150); do printf 'line %04d \\342\\234\\223\\n' $i; sleep 0.01; done",
            f"touch {marker}",
            "for i in $(seq 151 300); do printf 'line %04d \\342\\234\\223\\n' $i; sleep 0.02; done",
        ],
    )
    build_id = run(control_plane, "chatty")
    eventually(marker.exists, timeout=30, what="the step to be halfway")

    control_plane.signal(signal.SIGKILL)
    control_plane.wait(10)
    time.sleep(1.0)  # the runner keeps printing into its outbox meanwhile
    control_plane.start()  # same data folder, same port

    build = control_plane.wait_for(build_id, {"success", "failure", "error", "terminated"}, timeout=60)
    assert build["status"] == "success", build
    with control_plane.api() as api:
        stored = api.get(f"/builds/{build_id}/steps/main/log").content
    expected = "".join(f"line {i:04d} \u2713\n" for i in range(1, 301)).encode()
    assert stored == expected


def test_cancel_during_a_long_sleep_ends_the_build_as_terminated_and_the_process_is_gone(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    pidfile = tmp_path / "sleep.pid"
    start_runner()
    pipeline(control_plane, "sleepy", [f"sleep 300 & echo $! > {pidfile}; wait"])
    build_id = run(control_plane, "sleepy")
    eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, what="the sleep to start")
    sleep_pid = int(pidfile.read_text())

    started = time.monotonic()
    cancelled = control_plane.cli("build", "cancel", build_id, "--json", timeout=60)
    elapsed = time.monotonic() - started

    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "terminated"
    assert elapsed < 15
    assert not alive(sleep_pid)
    assert step_status(control_plane, build_id, "main") == "terminated"


def test_the_runner_process_holds_no_listening_socket(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    pidfile = tmp_path / "busy.pid"
    runner = start_runner()
    pipeline(control_plane, "busy", [f"echo $$ > {pidfile}; sleep 2"])
    build_id = run(control_plane, "busy")
    eventually(pidfile.exists, timeout=30, what="the build to run")

    mine = socket_inodes(runner.pid)
    assert mine, "the runner should hold its outgoing connections"
    assert not (mine & listening_inodes())
    control_plane.wait_for(build_id, {"success"}, timeout=30)


def lease_headers(task: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {task['job_token']}", LEASE_HEADER: task["lease_id"]}
