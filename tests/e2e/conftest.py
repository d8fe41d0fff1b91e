"""End-to-end fixtures: real processes on loopback, stopped after each test, logs shown on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import ControlPlane, Process, RunnerProcess, launch_runner

pytestmark = pytest.mark.e2e


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for process in started:
            print(f"----- {process.name} ({process.log}) -----\n{process.output()[-6000:]}")


@pytest.fixture
def control_plane(tmp_path: Path, processes: list[Process]) -> ControlPlane:
    cp = ControlPlane(tmp_path)
    processes.append(cp)
    cp.start()
    return cp


@pytest.fixture
def start_runner(tmp_path: Path, control_plane: ControlPlane, processes: list[Process]) -> Callable[..., RunnerProcess]:
    def start(*extra: str, name: str = "runner", token: str | None = None) -> RunnerProcess:
        token = token or control_plane.install_token()
        return launch_runner(processes, tmp_path, control_plane.url, token, *extra, name=name)

    return start
