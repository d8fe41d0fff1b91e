"""The whole product as a user runs it: control plane and runner as separate processes, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.processes import ControlPlane, RunnerProcess, eventually

THREE_STEPS = """version: '1.0'
steps:
  count:
    image: alpine
    commands:
      - for i in $(seq 1 400); do echo "count $i"; done
      - echo "to stderr" >&2
  greet:
    image: alpine
    commands:
      - echo "hello ${{NAME}} from build $CF_BUILD_ID"
      - echo "the password is $DB_PASSWORD"
      - cf_export SHARED=passed-on
  check:
    image: alpine
    commands:
      - 'echo "exported: ${{SHARED}}"'
"""

FAILING = """version: '1.0'
steps:
  ok:
    image: alpine
    commands: [echo fine]
  broken:
    image: alpine
    commands: [echo about to fail, 'exit 7']
  never:
    image: alpine
    commands: [echo never runs]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_multi_step_pipeline_runs_and_its_log_arrives_complete_and_in_order(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner()
    created = control_plane.cli(
        "pipeline",
        "create",
        "three",
        "--file",
        str(write(tmp_path, "cf.yml", THREE_STEPS)),
        "--secret-var",
        "DB_PASSWORD=hunter2-long",
    )
    assert created.returncode == 0, created.stderr

    run = control_plane.cli("run", "three", "--var", "NAME=e2e", timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    counts = [line for line in out.splitlines() if line.startswith("count ")]
    assert counts == [f"count {i}" for i in range(1, 401)]
    assert out.index("── step: count ──") < out.index("── step: greet ──") < out.index("── step: check ──")
    assert "hello e2e from build" in out
    assert "exported: passed-on" in out
    assert "the password is *****" in out
    assert "hunter2-long" not in out
    assert "success" in run.stderr

    build_id = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]["id"]
    with control_plane.api() as api:
        stored = api.get(f"/builds/{build_id}/steps/count/log").content
    expected = "".join(f"count {i}\n" for i in range(1, 401)) + "to stderr\n"
    assert stored == expected.encode()


def test_the_cli_exit_code_follows_the_build_result(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner()
    control_plane.cli("pipeline", "create", "failing", "--file", str(write(tmp_path, "f.yml", FAILING)))

    run = control_plane.cli("run", "failing", timeout=120)

    assert run.returncode == 1
    assert "about to fail" in run.stdout
    assert "never runs" not in run.stdout
    builds = json.loads(control_plane.cli("build", "list", "--json").stdout)
    assert builds[0]["status"] == "failure"
    shown = json.loads(control_plane.cli("build", "show", builds[0]["id"], "--json").stdout)
    assert [(s["name"], s["status"]) for s in shown["steps"] if not s["name"].startswith("$")] == [
        ("ok", "success"),
        ("broken", "failure"),
        ("never", "skipped"),
    ]
    logs = control_plane.cli("build", "logs", builds[0]["id"])
    assert logs.returncode == 0
    assert "about to fail" in logs.stdout


def test_a_runtime_install_token_registers_one_runner_that_only_connects_out(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    created = control_plane.cli("runtime", "create", "corp-k8s", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["install_token"]
    assert token.startswith("opi_")

    runner = start_runner("--name", "corp-1", token=token)

    def online() -> bool:
        runtimes = json.loads(control_plane.cli("runtime", "list", "--json").stdout)
        corp = next(r for r in runtimes if r["name"] == "corp-k8s")
        return any(r["name"] == "corp-1" and r["online"] for r in corp["runners"])

    eventually(online, timeout=20, what="the runner to show up online")
    saved = json.loads((runner.data_dir / "runner.json").read_text())
    assert saved["token"].startswith("opr_")
    assert oct((runner.data_dir / "runner.json").stat().st_mode & 0o777) == "0o600"

    second = start_runner("--name", "corp-2", token=token, name="second-runner")
    assert second.wait(30) == 2
    assert "unknown, used or expired install token" in second.output()


def test_validate_checks_a_file_offline(tmp_path: Path, control_plane: ControlPlane) -> None:
    good = control_plane.cli("validate", str(write(tmp_path, "good.yml", THREE_STEPS)))
    assert good.returncode == 0
    assert "valid" in good.stdout
    bad_file = write(tmp_path, "bad.yml", "version: '1.0'\nsteps:\n  a:\n    commands: [echo]\n  b.c:\n    image: x\n")
    bad = control_plane.cli("validate", str(bad_file))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith(f"{bad_file}:") for line in lines)


GATED = """version: '1.0'
stages: [check, release]
steps:
  tests:
    stage: check
    image: alpine
    commands: [echo tests pass]
  go_live:
    stage: release
    type: pending-approval
    title: Release to production?
  release:
    stage: release
    image: alpine
    commands: [echo releasing]
    when:
      steps: [{name: go_live, on: [approved]}]
  hold:
    stage: release
    image: alpine
    commands: [echo holding back]
    when:
      steps: [{name: go_live, on: [denied]}]
"""


def test_an_approval_from_the_cli_reaches_the_waiting_runner_and_the_build_goes_on(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner()
    assert (
        control_plane.cli("pipeline", "create", "gated", "--file", str(write(tmp_path, "g.yml", GATED))).returncode == 0
    )
    started = control_plane.cli("run", "gated", "--detach", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    build_id = json.loads(started.stdout)["id"]

    def waiting() -> bool | None:
        steps = {s["name"]: s for s in control_plane.build(build_id).get("steps") or []}
        return True if steps.get("go_live", {}).get("status") == "pending-approval" else None

    eventually(waiting, timeout=60, what="the approval step to wait")
    assert control_plane.build(build_id)["status"] == "running"

    approved = control_plane.cli("build", "approve", build_id, "go_live")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"build {build_id}: step go_live approved" in approved.stdout

    build = control_plane.wait_for(build_id, {"success", "failure", "error", "terminated"}, timeout=60)
    assert build["status"] == "success", build
    steps = {s["name"]: s for s in build["steps"]}
    assert steps["go_live"]["status"] == "approved"
    assert steps["go_live"]["decision"] == "approved"
    assert steps["release"]["status"] == "success"
    assert steps["hold"]["status"] == "skipped"
    again = control_plane.cli("build", "deny", build_id, "go_live")
    assert again.returncode != 0
    assert "already approved" in again.stdout + again.stderr
