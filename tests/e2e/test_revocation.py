"""A revoked runner is fenced at once, and no secret of a build rests on a runner's disk: real processes."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.e2e.test_chaos import LEASE_TTL, alive, step_status

pytestmark = pytest.mark.timeout(180)

SECRET = "k3y-0f-the-deploy-r0b0t-7c1f9a2e"
FINAL = {"success", "failure", "error", "terminated"}
STOP_WAIT = 30.0  # the runner's poll is woken by the revocation; its step gets SIGTERM then SIGKILL 3 s later


def secret_forms(value: str) -> list[bytes]:
    """The value, its base64 in each of the three alignments (the part its own bytes decide), and a job token."""
    raw = value.encode()
    forms = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        forms.append(encoded[4 if shift else 0 : -4])
    return [*forms, b"opj_"]


def files_holding_secrets(root: Path) -> list[str]:
    """A grep of the runner's whole data dir, bytes: every file holding the secret in some form or a job token."""
    needles = secret_forms(SECRET)
    return [
        f"{path}: {next(n for n in needles if n in path.read_bytes())!r}"
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in needles)
    ]


def deploy_pipeline(cp: ControlPlane, commands: list[str]) -> None:
    yaml = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands:\n"
    yaml += "".join(f"      - {json.dumps(c)}\n" for c in commands)
    with cp.api() as api:
        r = api.post("/pipelines", json={"name": "deploy", "yaml": yaml, "secrets": {"API_KEY": SECRET}})
        assert r.status_code == 201, r.text


def start_build(cp: ControlPlane) -> str:
    with cp.api() as api:
        r = api.post("/pipelines/deploy/builds", json={})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def long_step(pidfile: Path) -> list[str]:
    """Uses the secret (printed: masked; exported with cf_export --mask), then runs until stopped."""
    return [
        'echo "deploying with $API_KEY"',
        "cf_export --mask COPY=$API_KEY",
        f"sleep 300 & echo $! > {pidfile}; wait",
    ]


def wait_until_running(cp: ControlPlane, build_id: str, pidfile: Path) -> int:
    eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, what="the step to start")
    eventually(lambda: step_status(cp, build_id, "main") == "running", timeout=10, what="the step to be running")
    return int(pidfile.read_text())


def test_a_runner_revoked_mid_build_stops_its_step_ends_the_build_and_exits_leaving_no_secret(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    pidfile = tmp_path / "step.pid"
    runner = start_runner()
    deploy_pipeline(control_plane, long_step(pidfile))
    build_id = start_build(control_plane)
    step_pid = wait_until_running(control_plane, build_id, pidfile)
    with control_plane.api() as api:
        runner_id = api.get("/runners").json()[0]["id"]

    revoked = control_plane.cli("runners", "revoke", runner_id)

    assert revoked.returncode == 0, revoked.stderr
    build = control_plane.build(build_id)
    assert (build["status"], build["message"]) == ("error", "runner revoked")
    assert runner.wait(STOP_WAIT) == 2
    assert "refused this runner" in runner.output()
    assert not alive(step_pid)
    assert not list(runner.build_folders())
    assert files_holding_secrets(runner.data_dir) == []
    with control_plane.api() as api:
        log = api.get(f"/builds/{build_id}/steps/main/log").content
    assert b"deploying with *****" in log
    assert control_plane.build(build_id)["status"] == "error"  # nothing the runner said afterwards changed it


def test_after_a_clean_finish_no_file_of_the_runner_holds_the_secret_or_the_job_token(
    control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    runner = start_runner()
    deploy_pipeline(control_plane, ['echo "deploying with $API_KEY"', "cf_export --mask COPY=$API_KEY"])
    build_id = start_build(control_plane)

    assert control_plane.wait_for(build_id, FINAL, timeout=60)["status"] == "success"

    eventually(lambda: not list(runner.build_folders()), timeout=10, what="the build folder to go")
    assert files_holding_secrets(runner.data_dir) == []
    assert list((runner.data_dir / "volumes").glob("*/")), "the pipeline's volume is kept, as a cache"


def test_a_sigkilled_runner_leaves_no_secret_on_disk_and_its_restart_removes_the_build_folder(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    pidfile = tmp_path / "step.pid"
    runner = start_runner()
    deploy_pipeline(control_plane, ['echo "deploying with $API_KEY"', f"sleep 300 & echo $! > {pidfile}; wait"])
    build_id = start_build(control_plane)
    step_pid = wait_until_running(control_plane, build_id, pidfile)

    runner.signal(signal.SIGKILL)
    runner.wait(10)

    assert list(runner.build_folders()), "the crashed runner's outbox stays for its restart"
    assert files_holding_secrets(runner.data_dir) == []
    restarted = start_runner(name="runner")
    eventually(lambda: not alive(step_pid), timeout=20, what="the orphaned step to be ended")
    eventually(lambda: not list(restarted.build_folders()), timeout=20, what="the old build folder to go")
    build = control_plane.wait_for(build_id, FINAL, timeout=LEASE_TTL + 10)
    assert build["status"] == "error"
    assert files_holding_secrets(runner.data_dir) == []
