"""What steps leave for the build page, and restarts, with real server and runner processes: artifacts uploaded
and downloaded, JUnit reports read into annotations, a restart from the failed step that skips what succeeded on
the volume it left, and one that runs every step when that volume is not there."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.processes import ControlPlane, RunnerProcess

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="unit" tests="3">
    <testcase classname="app.MathTest" name="adds" time="0.012"/>
    <testcase classname="app.MathTest" name="divides" time="0.5">
      <failure message="expected 2 but was 3">Traceback: line 7</failure>
    </testcase>
    <testcase classname="app.IoTest" name="reads" time="0.1"><skipped/></testcase>
  </testsuite>
</testsuites>
"""

OUTPUTS = """version: '1.0'
steps:
  test:
    image: alpine
    commands:
      - mkdir -p dist reports
      - echo 'the build output' > dist/app.txt
      - ln -sf /etc/hostname dist/escape.txt
      - cp "$REPORT" reports/unit.xml
      - echo '<testsuite><testcase' > reports/broken.xml
      - exit 1
    artifacts: [dist/*]
    junit: [reports/*.xml]
"""

# `prepare` leaves a file only this run can have made; `test` fails until the flag file exists.
RESTARTABLE = """version: '1.0'
steps:
  prepare:
    image: alpine
    commands:
      - echo "made by $CF_BUILD_ID" > prepared.txt
  test:
    image: alpine
    commands:
      - cat prepared.txt
      - test -f "$FLAG"
  after:
    image: alpine
    commands: [echo after]
"""


def run_pipeline(cp: ControlPlane, tmp_path: Path, name: str, yaml: str, *var: str) -> dict[str, object]:
    (tmp_path / f"{name}.yml").write_text(yaml)
    created = cp.cli("pipeline", "create", name, "--file", str(tmp_path / f"{name}.yml"))
    assert created.returncode == 0, created.stderr
    args = [a for v in var for a in ("--var", v)]
    run = cp.cli("run", name, *args, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    listed = json.loads(cp.cli("build", "list", "--pipeline", name, "--json").stdout)
    return cp.build(listed[0]["id"])


def step_log(cp: ControlPlane, build_id: str, step: str) -> str:
    with cp.api() as api:
        return api.get(f"/builds/{build_id}/steps/{step}/log").text


def test_a_failing_steps_artifacts_and_test_report_reach_the_control_plane_and_nothing_outside_the_volume(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner()
    (tmp_path / "unit.xml").write_text(JUNIT)
    build = run_pipeline(control_plane, tmp_path, "outputs", OUTPUTS, f"REPORT={tmp_path / 'unit.xml'}")
    build_id = str(build["id"])

    with control_plane.api() as api:
        report = api.get(f"/builds/{build_id}/annotations").json()
    assert (report["total"], report["failed"], report["counts"]) == (3, 1, {"failed": 1, "passed": 1, "skipped": 1})
    first = report["cases"][0]
    assert (first["classname"], first["name"], first["status"], first["time"]) == (
        "app.MathTest",
        "divides",
        "failed",
        0.5,
    )
    assert first["message"] == "expected 2 but was 3 Traceback: line 7"
    assert [c["status"] for c in report["cases"]] == ["failed", "skipped", "passed"]

    listed = json.loads(control_plane.cli("build", "artifacts", f"outputs#{build['number']}", "--json").stdout)
    assert [(a["step"], a["path"], a["size"]) for a in listed] == [("test", "dist/app.txt", 17)]
    saved = control_plane.cli("build", "artifacts", build_id, "--download", str(tmp_path / "got"), "--json")
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "got" / "dist" / "app.txt").read_text() == "the build output\n"
    assert not (tmp_path / "got" / "dist" / "escape.txt").exists()

    log = step_log(control_plane, build_id, "test")
    assert "warning: escape.txt leads outside the build volume; skipped" in log
    assert "warning: reports/broken.xml is not a JUnit report the runner can read (invalid XML" in log
    assert "test report: 3 test cases, 1 failed" in log
    assert "artifact uploaded: dist/app.txt (17 bytes)" in log
    assert log.index("exited with code 1") < log.index("test report:")  # the step's own last word comes first


def test_a_restart_from_the_failed_step_skips_what_succeeded_and_reuses_the_volume_it_left(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner()
    flag = tmp_path / "fixed"
    original = run_pipeline(control_plane, tmp_path, "flaky", RESTARTABLE, f"FLAG={flag}")
    assert [s["status"] for s in original["steps"] if s["name"] != "$system"] == ["success", "failure", "skipped"]
    flag.touch()  # the cause of the failure is fixed

    restarted = control_plane.cli("build", "restart", f"flaky#{original['number']}", "--from-failed", "--json")
    assert restarted.returncode == 0, restarted.stderr
    again = json.loads(restarted.stdout)
    assert again["restarted_from"] == original["id"]
    assert again["resume_steps"] == ["prepare"]
    done = control_plane.wait_for(again["id"], {"success", "failure", "error"}, timeout=60)

    assert done["status"] == "success", done
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["prepare"]["status"] == "skipped"
    assert steps["prepare"]["message"].startswith(f"succeeded in #{original['number']}: not run again")
    assert step_log(control_plane, again["id"], "test") == f"made by {original['id']}\n"  # the volume it left
    assert steps["after"]["status"] == "success"
    assert "the steps that succeeded there are skipped" in step_log(control_plane, again["id"], "$system")


def test_a_restart_from_the_failed_step_without_the_original_volume_runs_every_step(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner("--volume-reuse", "none")
    flag = tmp_path / "fixed"
    original = run_pipeline(control_plane, tmp_path, "flaky", RESTARTABLE, f"FLAG={flag}")
    flag.touch()

    again = json.loads(control_plane.cli("build", "restart", str(original["id"]), "--from-failed", "--json").stdout)
    done = control_plane.wait_for(again["id"], {"success", "failure", "error"}, timeout=60)

    assert done["status"] == "success", done
    assert [s["status"] for s in done["steps"] if s["name"] != "$system"] == ["success", "success", "success"]
    assert step_log(control_plane, again["id"], "test") == f"made by {again['id']}\n"
    assert "but every step runs: this runner keeps no volume" in step_log(control_plane, again["id"], "$system")


def test_a_build_that_succeeded_cannot_be_restarted_from_a_failed_step_but_can_be_restarted_whole(
    tmp_path: Path, control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess]
) -> None:
    start_runner()
    flag = tmp_path / "fixed"
    flag.touch()
    (tmp_path / "ok.yml").write_text(RESTARTABLE)
    assert control_plane.cli("pipeline", "create", "ok", "--file", str(tmp_path / "ok.yml")).returncode == 0
    assert control_plane.cli("run", "ok", "--var", f"FLAG={flag}", timeout=120).returncode == 0

    refused = control_plane.cli("build", "restart", "ok#1", "--from-failed", "--json")
    whole = control_plane.cli("build", "restart", "ok#1")

    assert refused.returncode == 2
    assert "succeeded: no step failed to restart from" in refused.stderr
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.startswith("ok#2 (")
    assert "restarts ok#1 whole" in whole.stdout
