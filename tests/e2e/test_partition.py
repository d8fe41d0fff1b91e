"""A runner cut off from the control plane for longer than the lease TTL: its step is frozen at the runner's own
lease deadline (no step runs without a lease) and stopped once the control plane, reached again, answers that the
lease is gone; the build ends "runner lost", and every line the step printed until its deadline still reaches the
control plane, once and in order, marked late.

The first test runs the control plane in an `internet` network namespace and the runner in `corp`; the cut is a
firewall rule in `corp` that drops every packet between them (calls hang). It needs root, `ip` and `iptables`
(recipes/real-components.md): skipped locally without them, failed under CI=true. The second cuts a relay between
them on loopback (calls fail at once), and runs anywhere.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.processes import ControlPlane, Process, eventually, launch_runner
from tests.e2e.proxy import CuttableProxy
from tests.e2e.test_chaos import pipeline, run
from tests.e2e.test_firewall import (  # noqa: F401 - `namespaces` is a fixture
    CP_PORT,
    INTERNET_IP,
    REPO_ROOT,
    InNamespace,
    Namespaces,
    direct_env,
    namespaces,
)

pytestmark = pytest.mark.timeout(240)

TTL = 4.0
CUT = 1.5 * TTL
FETCH = """
import sys, httpx
r = httpx.get(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]}, timeout=30)
r.raise_for_status()
sys.stdout.buffer.write(r.content)
"""


def test_a_runner_cut_off_longer_than_the_lease_stops_its_step_at_its_deadline_and_the_log_keeps_every_line(
    tmp_path: Path,
    namespaces: Namespaces,  # noqa: F811 - the fixture imported above
    processes: list[Process],
) -> None:
    ns = namespaces
    data = tmp_path / "cp"
    env = direct_env(OUTPOST_LEASE_TTL=f"{TTL:g}")
    command = [sys.executable, "-m", "outpost", "server", "--host", INTERNET_IP, "--port", str(CP_PORT)]
    control_plane = InNamespace(
        ns.internet, "control plane (internet)", [*command, "--data-dir", str(data)], tmp_path / "cp.log", env
    )
    processes.append(control_plane)
    control_plane.start()
    url = control_plane.wait_for_output(r"control plane on (http://[\d.:]+)").group(1)
    token = (data / "admin-token").read_text().strip()
    cli_env = direct_env(OUTPOST_URL=url, OUTPOST_TOKEN=token)

    def internet(*args: str, timeout: float = 60) -> bytes:
        """A command run on the internet side, the only side that reaches the control plane's address."""
        done = subprocess.run(
            ["ip", "netns", "exec", ns.internet, *args],
            capture_output=True,
            env=cli_env,
            timeout=timeout,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def cli(*args: str) -> bytes:
        return internet(sys.executable, "-m", "outpost", *args)

    def build() -> dict[str, object]:
        shown: dict[str, object] = json.loads(cli("build", "show", build_id, "--json"))
        return shown

    def stored(stream: str) -> bytes:
        return internet(sys.executable, "-c", FETCH, f"{url}/api/v1/builds/{build_id}/steps/{stream}/log", token)

    install = json.loads(cli("runtime", "create", "corp", "--json"))["install_token"]
    printed, started = tmp_path / "printed", tmp_path / "started"
    step = endless_step(started, printed)
    pipeline = tmp_path / "codefresh.yml"
    pipeline.write_text(
        f"version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands:\n      - {json.dumps(step)}\n"
    )
    cli("pipeline", "create", "endless", "--file", str(pipeline), "--runtime", "corp")

    runner = InNamespace(
        ns.corp,
        "runner (corp)",
        [sys.executable, "-m", "outpost", "runner", "start", "--url", url, "--token", install,
         "--data-dir", str(tmp_path / "runner")],
        tmp_path / "runner.log",
        env,
    )  # fmt: skip
    processes.append(runner)
    runner.start()
    build_id = json.loads(cli("run", "endless", "--detach", "--json"))["id"]
    eventually(started.exists, timeout=60, what="the step to start")
    time.sleep(1.0)

    drop = [["OUTPUT", "-d", INTERNET_IP], ["INPUT", "-s", INTERNET_IP]]
    for chain, *match in drop:
        ns.run(ns.corp, "iptables", "-I", chain, "1", *match, "-j", "DROP")
    cut_at = time.time()
    time.sleep(CUT)
    for chain, *match in drop:
        ns.run(ns.corp, "iptables", "-D", chain, *match, "-j", "DROP")

    lost = build()
    assert (lost["status"], lost["message"]) == ("error", "runner lost")
    eventually(lambda: not list((tmp_path / "runner" / "builds").glob("*")), timeout=90, what="the runner to let go")

    stopped_at_the_deadline_with_every_line_stored(printed, cut_at, stored("main"), stored("$system"))
    after = build()
    assert (after["status"], after["message"]) == ("error", "runner lost")


def test_a_runner_whose_connections_are_cut_longer_than_the_lease_stops_its_step_and_hands_in_every_line(
    tmp_path: Path, processes: list[Process]
) -> None:
    """The same through a relay that drops every connection (no root needed): the calls fail at once, not hang."""
    cp = ControlPlane(tmp_path, OUTPOST_LEASE_TTL=f"{TTL:g}")
    processes.append(cp)
    cp.start()
    relay = CuttableProxy(cp.port)
    try:
        runner = launch_runner(processes, tmp_path, relay.url, cp.install_token())
        printed, started = tmp_path / "printed", tmp_path / "started"
        pipeline(cp, "endless", [endless_step(started, printed)])
        build_id = run(cp, "endless")
        eventually(started.exists, timeout=60, what="the step to start")
        time.sleep(1.0)

        relay.cut()
        cut_at = time.time()
        time.sleep(CUT)
        assert (cp.build(build_id)["status"], cp.build(build_id)["message"]) == ("error", "runner lost")
        relay.restore()
        eventually(lambda: not list(runner.build_folders()), timeout=90, what="the runner to let go")
    finally:
        relay.stop()

    with cp.api() as api:
        logs = [api.get(f"/builds/{build_id}/steps/{s}/log").content for s in ("main", "$system")]
    stopped_at_the_deadline_with_every_line_stored(printed, cut_at, *logs)
    assert (cp.build(build_id)["status"], cp.build(build_id)["message"]) == ("error", "runner lost")


def endless_step(started: Path, printed: Path) -> str:
    """Prints a numbered, timestamped line every 0.1 s until stopped; records each line after printing it."""
    return (
        f'touch {started}; i=0; while true; do i=$((i+1)); l="line $i $(date +%s.%N)"; '
        f'echo "$l"; echo "$l" >> {printed}; sleep 0.1; done'
    )


def stopped_at_the_deadline_with_every_line_stored(printed: Path, cut_at: float, main: bytes, system: bytes) -> None:
    lines = printed.read_text().splitlines()
    last = float(lines[-1].split()[2])
    # The last renewal was sent before the cut, so the runner's deadline came at most a TTL after it; the step
    # stopped then, not before its lease ran out (give or take the last renewals before the cut on a loaded machine).
    assert last <= cut_at + TTL + 1.0, f"a line was printed {last - cut_at - TTL:.1f}s after the lease deadline"
    assert last >= cut_at + TTL - 3.0, f"the step stopped {cut_at + TTL - last:.1f}s before its lease could end"
    log = main.decode()
    numbers = [int(m) for m in re.findall(r"^line (\d+) ", log, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), "lines lost, doubled or out of order"
    assert len(numbers) in (len(lines), len(lines) + 1)  # + the line printed as the step was killed, if any
    assert log.splitlines()[: len(lines)] == lines
    assert b"of the log of step main arrived after the lease expired" in system
    # Frozen at the deadline, stopped once the control plane answered that the lease was gone.
    assert b"the steps are frozen until it answers" in system
    assert b"the lease is lost" in system


def test_a_runner_killed_while_cut_off_hands_in_its_outbox_late_once_restarted(
    tmp_path: Path, processes: list[Process]
) -> None:
    """What a killed runner's outbox held when its lease expired meanwhile still goes in, through late-logs."""
    cp = ControlPlane(tmp_path, OUTPOST_LEASE_TTL=f"{TTL:g}")
    processes.append(cp)
    cp.start()
    relay = CuttableProxy(cp.port)
    token = cp.install_token()
    try:
        runner = launch_runner(processes, tmp_path, relay.url, token)
        printed, started = tmp_path / "printed", tmp_path / "started"
        pipeline(cp, "endless", [endless_step(started, printed)])
        build_id = run(cp, "endless")
        eventually(started.exists, timeout=60, what="the step to start")
        time.sleep(1.0)

        relay.cut()  # what the step prints from now on stays in the runner's outbox
        time.sleep(2.0)
        runner.signal(signal.SIGKILL)
        killed_at = time.time()
        runner.wait(10)
        lost = cp.wait_for(build_id, {"error", "success", "failure", "terminated"}, timeout=TTL + 10)
        assert (lost["status"], lost["message"]) == ("error", "runner lost")
        relay.restore()
        restarted = launch_runner(processes, tmp_path, relay.url, token)
        eventually(lambda: not list(restarted.build_folders()), timeout=60, what="the restarted runner to let go")
    finally:
        relay.stop()

    with cp.api() as api:
        main = api.get(f"/builds/{build_id}/steps/main/log").content.decode()
        system = api.get(f"/builds/{build_id}/steps/$system/log").content
    numbers = [int(m) for m in re.findall(r"^line (\d+) ", main, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), "lines lost, doubled or out of order"
    before_the_kill = [line for line in printed.read_text().splitlines() if float(line.split()[2]) < killed_at - 0.5]
    assert main.splitlines()[: len(before_the_kill)] == before_the_kill  # the cut's lines too, from the outbox
    assert b"of the log of step main arrived after the lease expired" in system
    assert (cp.build(build_id)["status"], cp.build(build_id)["message"]) == ("error", "runner lost")
