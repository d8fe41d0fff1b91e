"""A stalled control plane is not the runners' fault: stopped (SIGSTOP) or with its database locked for twice the
lease TTL, it fails no healthy build and loses no log byte. Real processes on loopback. In the first two tests the
steps finish before the runners' own lease deadline; in the last two a step is still running when that deadline
passes: it is frozen (nothing of it runs without a lease) and resumes when the control plane answers again
(test_partition.py: a runner cut off for good, whose frozen step is stopped).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.e2e.processes import ControlPlane, Process, RunnerProcess, eventually, launch_runner
from tests.e2e.test_chaos import pipeline, run

pytestmark = pytest.mark.timeout(180)

TTL = 6.0
BUILDS = 2
LINES = 60


@pytest.fixture
def control_plane(tmp_path: Path, processes: list[Process]) -> ControlPlane:
    cp = ControlPlane(tmp_path, OUTPOST_LEASE_TTL=f"{TTL:g}")
    processes.append(cp)
    cp.start()
    return cp


@pytest.fixture
def busy_runner(tmp_path: Path, control_plane: ControlPlane, processes: list[Process]) -> RunnerProcess:
    token = control_plane.install_token()
    return launch_runner(processes, tmp_path, control_plane.url, token, "--concurrency", str(BUILDS))


def expected_log(n: int) -> bytes:
    return "".join(f"build {n} line {i:03d} \u2713\n" for i in range(1, LINES + 1)).encode()


def start_builds(cp: ControlPlane, folder: Path) -> list[str]:
    """BUILDS builds whose step prints LINES lines over about a second and a half; returns once every step runs."""
    pipeline(
        cp,
        "chatty",
        [
            f"touch {folder}/started-$N",
            f"for i in $(seq 1 {LINES}); do printf 'build %s line %03d \\342\\234\\223\\n' $N $i; sleep 0.02; done",
        ],
    )
    ids = [run(cp, "chatty", N=str(n)) for n in range(BUILDS)]
    for n in range(BUILDS):
        eventually((folder / f"started-{n}").exists, timeout=60, what=f"the step of build {n} to start")
    assert {cp.build(i)["status"] for i in ids} == {"running"}
    return ids


def all_succeed_with_their_whole_log(cp: ControlPlane, ids: list[str]) -> None:
    for n, build_id in enumerate(ids):
        build = cp.wait_for(build_id, {"success", "failure", "error", "terminated"}, timeout=90)
        assert (build["status"], build["message"]) == ("success", None), build
        with cp.api() as api:
            assert api.get(f"/builds/{build_id}/steps/main/log").content == expected_log(n)


@contextmanager
def exclusive_lock(database: Path) -> Iterator[None]:
    """Another connection holds the database's write lock: every write of the control plane waits, then fails."""
    conn = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_a_control_plane_stopped_for_twice_the_lease_ttl_fails_no_build_and_loses_no_line(
    tmp_path: Path, control_plane: ControlPlane, busy_runner: RunnerProcess
) -> None:
    ids = start_builds(control_plane, tmp_path)

    control_plane.signal(signal.SIGSTOP)
    try:
        time.sleep(2 * TTL)
    finally:
        control_plane.signal(signal.SIGCONT)

    all_succeed_with_their_whole_log(control_plane, ids)


def test_a_database_locked_for_twice_the_lease_ttl_fails_no_build_and_loses_no_line(
    tmp_path: Path, control_plane: ControlPlane, busy_runner: RunnerProcess
) -> None:
    ids = start_builds(control_plane, tmp_path)

    with exclusive_lock(control_plane.data_dir / "outpost.db"):
        time.sleep(2 * TTL)

    all_succeed_with_their_whole_log(control_plane, ids)
    assert "was not serving" in control_plane.output()  # the lock was real: the control plane saw its calls wait


@contextmanager
def stopped(cp: ControlPlane) -> Iterator[None]:
    cp.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        cp.signal(signal.SIGCONT)


STALLS: dict[str, Callable[[ControlPlane], AbstractContextManager[None]]] = {
    "stopped": stopped,
    "database locked": lambda cp: exclusive_lock(cp.data_dir / "outpost.db"),
}


@pytest.mark.parametrize("stall", list(STALLS))
def test_a_step_still_running_at_the_runners_deadline_during_a_stall_is_frozen_then_resumes_and_succeeds(
    tmp_path: Path, control_plane: ControlPlane, busy_runner: RunnerProcess, stall: str
) -> None:
    printed, started = tmp_path / "printed", tmp_path / "started"
    count = 100  # a line every 0.1 s: the step runs well past the runner's deadline (TTL after the stall began)
    pipeline(
        control_plane,
        "long",
        [
            f'touch {started}; for i in $(seq 1 {count}); do l="line $i $(date +%s.%N)"; echo "$l"; '
            f'echo "$l" >> {printed}; sleep 0.1; done'
        ],
    )
    build_id = run(control_plane, "long")
    eventually(started.exists, timeout=60, what="the step to start")
    time.sleep(1.0)

    with STALLS[stall](control_plane):
        stalled_at = time.time()
        time.sleep(2 * TTL)
        resumed_at = time.time()

    build = control_plane.wait_for(build_id, {"success", "failure", "error", "terminated"}, timeout=90)
    assert (build["status"], build["message"]) == ("success", None), build
    with control_plane.api() as api:
        log = api.get(f"/builds/{build_id}/steps/main/log").content
        system = api.get(f"/builds/{build_id}/steps/$system/log").content
    assert log == printed.read_bytes()  # byte-identical: every line once, in order
    assert [int(line.split()[1]) for line in log.decode().splitlines()] == list(range(1, count + 1))
    # The runner's deadline came at most a TTL after the stall began: from then until the control plane answered
    # again, the step printed nothing (frozen, not killed: it went on where it stood).
    stamps = [float(line.split()[2]) for line in log.decode().splitlines()]
    assert not [t for t in stamps if stalled_at + TTL + 1.0 < t < resumed_at], "a line was printed while frozen"
    assert b"the steps are frozen until it answers" in system
    assert b"the control plane answered again after" in system
    if stall == "database locked":
        assert "was not serving" in control_plane.output()
