"""Network cuts between runner and control plane: short ones cost nothing, long ones end the build cleanly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.processes import ControlPlane, Process, eventually, launch_runner
from tests.e2e.proxy import CuttableProxy
from tests.e2e.test_chaos import alive, pipeline, run, step_status


@pytest.fixture
def patient_control_plane(tmp_path: Path, processes: list[Process]) -> ControlPlane:
    cp = ControlPlane(tmp_path, OUTPOST_LEASE_TTL="15")
    processes.append(cp)
    cp.start()
    return cp


def test_a_short_cut_loses_no_log_line_and_the_build_succeeds(
    tmp_path: Path, patient_control_plane: ControlPlane, processes: list[Process]
) -> None:
    cp = patient_control_plane
    relay = CuttableProxy(cp.port)
    try:
        launch_runner(processes, tmp_path, relay.url, cp.install_token())
        marker = tmp_path / "started"
        pipeline(cp, "chatty", [f"touch {marker}", "for i in $(seq 1 200); do echo tick $i; sleep 0.02; done"])
        build_id = run(cp, "chatty")
        eventually(marker.exists, timeout=30, what="the step to start")

        relay.cut()
        time.sleep(3)
        relay.restore()

        build = cp.wait_for(build_id, {"success", "failure", "error", "terminated"}, timeout=60)
        assert build["status"] == "success", build
        with cp.api() as api:
            stored = api.get(f"/builds/{build_id}/steps/main/log").content
        assert stored == "".join(f"tick {i}\n" for i in range(1, 201)).encode()
        assert relay.refused > 0, "the runner should have tried to reach the control plane during the cut"
    finally:
        relay.stop()


def test_a_cut_longer_than_the_lease_ends_the_build_and_the_runner_lets_go(
    tmp_path: Path, control_plane: ControlPlane, processes: list[Process]
) -> None:
    relay = CuttableProxy(control_plane.port)
    try:
        runner = launch_runner(processes, tmp_path, relay.url, control_plane.install_token())
        pidfile = tmp_path / "sleep.pid"
        pipeline(control_plane, "long", [f"sleep 300 & echo $! > {pidfile}; wait"])
        build_id = run(control_plane, "long")
        eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, what="the step to start")
        eventually(lambda: step_status(control_plane, build_id, "main") == "running", timeout=10, what="running")
        sleep_pid = int(pidfile.read_text())

        relay.cut()
        build = control_plane.wait_for(build_id, {"error"}, timeout=20)
        assert build["message"] == "runner lost"
        relay.restore()

        eventually(lambda: not alive(sleep_pid), timeout=30, what="the runner to stop the lost build's step")
        eventually(lambda: not list(runner.build_folders()), timeout=30, what="the lost build's folder to go")
        assert "abandoned" in runner.output()
        assert control_plane.build(build_id)["status"] == "error"
        runtimes = json.loads(control_plane.cli("runtime", "list", "--json").stdout)
        assert any(r["online"] for rt in runtimes for r in rt["runners"])
    finally:
        relay.stop()
