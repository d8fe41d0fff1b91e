"""The runner's own life: a graceful stop on SIGTERM, and several builds at once."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.e2e.test_chaos import pipeline, run


def test_sigterm_stops_polling_and_lets_the_running_build_finish(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    marker = tmp_path / "running"
    runner = start_runner()
    pipeline(control_plane, "short", [f"touch {marker}", "sleep 2", "echo finished"])
    first = run(control_plane, "short")
    eventually(marker.exists, timeout=30, what="the first build to run")

    runner.signal(signal.SIGTERM)
    time.sleep(0.3)
    second = run(control_plane, "short")

    assert runner.wait(30) == 0
    assert control_plane.build(first)["status"] == "success"
    assert control_plane.build(second)["status"] == "queued"


def test_a_runner_with_concurrency_two_runs_two_builds_at_once(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    # Each build waits for the other to have started: only concurrent runs can both finish.
    start_runner("--concurrency", "2")
    script = (
        f"touch {tmp_path}/$ME; for i in $(seq 1 100); do [ -e {tmp_path}/$OTHER ] && exit 0; sleep 0.1; done; exit 1"
    )
    pipeline(control_plane, "rendezvous", [script])
    a = run(control_plane, "rendezvous", ME="a", OTHER="b")
    b = run(control_plane, "rendezvous", ME="b", OTHER="a")
    assert control_plane.wait_for(a, {"success", "failure"}, timeout=60)["status"] == "success"
    assert control_plane.wait_for(b, {"success", "failure"}, timeout=60)["status"] == "success"


def test_the_control_plane_stops_promptly_while_a_runner_holds_a_poll_open(
    control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    runner = start_runner()
    eventually(lambda: "registered" in runner.output(), timeout=20, what="the runner to register")
    time.sleep(0.5)  # its poll is now held open by the control plane
    started = time.monotonic()
    control_plane.signal(signal.SIGTERM)
    assert control_plane.wait(20) == 0
    assert time.monotonic() - started < 5
    assert runner.running(), "the runner rides out the control plane's absence"
