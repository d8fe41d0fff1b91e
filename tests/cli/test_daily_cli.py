"""The CLI a person uses every day: `outpost open BUILD`, shell completion, and `build logs --follow` that
rides out a network cut (through the real command, a real control plane and runner, and a relay to cut)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.processes import ControlPlane, RunnerProcess, eventually, outpost_env
from tests.e2e.proxy import CuttableProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
BIN = Path(sys.executable).parent  # the virtualenv's `outpost`
HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hello]\n"
SLOW = """version: '1.0'
steps:
  count:
    image: alpine
    commands: ['for i in $(seq 1 30); do echo "line $i"; sleep 0.2; done']
"""


def test_shell_completion_completes_commands_in_bash() -> None:
    complete = '_outpost_completion outpost; echo "${COMPREPLY[*]}"; COMPREPLY=()'
    script = (
        'eval "$(outpost completion bash)"\n'
        f"COMP_WORDS=(outpost bu); COMP_CWORD=1; {complete}\n"
        f"COMP_WORDS=(outpost build l); COMP_CWORD=2; {complete}\n"
    )
    env = {**outpost_env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["build", "list logs"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_completion_scripts_exist_for_zsh_and_fish(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "outpost", "completion", shell, "--json"],
        capture_output=True,
        text=True,
        env=outpost_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "_OUTPOST_COMPLETE" in json.loads(done.stdout)["script"]


def test_open_shows_the_build_page_in_the_browser(
    control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess], tmp_path: Path
) -> None:
    start_runner()
    (tmp_path / "hello.yml").write_text(HELLO)
    control_plane.cli("pipeline", "create", "hello", "--file", str(tmp_path / "hello.yml"))
    build_id = control_plane.cli("run", "hello", "--detach").stdout.strip()
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**control_plane.cli_env(), "BROWSER": str(browser)}
    done = subprocess.run(
        [sys.executable, "-m", "outpost", "open", build_id], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    url = f"{control_plane.url}/builds/{build_id}"
    assert done.stdout.strip() == url
    assert eventually(lambda: opened.exists() and opened.read_text().strip(), timeout=10, what="the browser") == url
    as_json = json.loads(control_plane.cli("open", build_id, "--json").stdout)
    assert as_json == {"id": build_id, "url": url}


def test_following_a_log_rides_out_a_network_cut_and_misses_no_line(
    control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess], tmp_path: Path
) -> None:
    start_runner()
    (tmp_path / "slow.yml").write_text(SLOW)
    control_plane.cli("pipeline", "create", "slow", "--file", str(tmp_path / "slow.yml"))
    build_id = control_plane.cli("run", "slow", "--detach").stdout.strip()
    relay = CuttableProxy(control_plane.port)
    out, err = tmp_path / "out", tmp_path / "err"
    env = {**control_plane.cli_env(), "OUTPOST_URL": relay.url}
    try:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            follower = subprocess.Popen(
                [sys.executable, "-m", "outpost", "build", "logs", build_id, "--follow"],
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
            try:
                eventually(lambda: b"line 3\n" in out.read_bytes(), timeout=30, what="the first lines")
                relay.cut()
                time.sleep(3)  # lines go on being printed meanwhile
                relay.restore()
                assert follower.wait(60) == 0
            finally:
                follower.kill()
                follower.wait()
    finally:
        relay.stop()
    log = out.read_text()
    assert [line for line in log.splitlines() if line.startswith("line ")] == [f"line {i}" for i in range(1, 31)]
    said = err.read_text()
    assert "reconnecting" in said
    assert "reconnected" in said
    assert f"build {build_id} success" in said


def test_builds_are_named_by_pipeline_and_number_in_list_and_show(control_plane: ControlPlane, tmp_path: Path) -> None:
    (tmp_path / "hello.yml").write_text(HELLO)
    assert control_plane.cli("runtime", "create", "idle").returncode == 0  # no runner: the builds stay queued
    made = control_plane.cli("pipeline", "create", "my-app", "--file", str(tmp_path / "hello.yml"))
    assert made.returncode == 0, made.stderr
    first = control_plane.cli("run", "my-app", "--detach").stdout.strip()
    second = control_plane.cli("run", "my-app", "--detach").stdout.strip()

    listed = control_plane.cli("build", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines() if line}
    assert lines == {first: "my-app#1", second: "my-app#2"}
    shown = control_plane.cli("build", "show", "my-app#2")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"my-app#2: build {second} ")
    as_json = json.loads(control_plane.cli("build", "show", "my-app#1", "--json").stdout)
    assert (as_json["id"], as_json["number"]) == (first, 1)
    cancelled = control_plane.cli("build", "cancel", "my-app#1", "--no-wait")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled by" in control_plane.cli("build", "show", "my-app#1").stdout

    missing = control_plane.cli("build", "show", "my-app#3", "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"] == "not_found"
    bad = control_plane.cli("build", "show", "my-app#x")
    assert bad.returncode == 2
    assert "PIPELINE#NUMBER" in bad.stderr


def test_build_show_prints_a_webhook_builds_commit_and_pull_request_with_links(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    assert control_plane.cli("runtime", "create", "idle").returncode == 0
    (tmp_path / "hello.yml").write_text(HELLO)
    assert control_plane.cli("pipeline", "create", "hello-world", "--file", str(tmp_path / "hello.yml")).returncode == 0
    answer, sha = control_plane.deliver_github_pull_request("hello-world")
    assert answer.status_code == 201, answer.text

    shown = control_plane.cli("build", "show", "hello-world#1")

    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert f"https://github.com/Codertocat/Hello-World/commit/{sha}" in lines
    assert (
        "pull request #2 Update the README with new information.  https://github.com/Codertocat/Hello-World/pull/2"
        in lines
    )


def test_build_list_filters_by_branch_and_pages_on_with_before(control_plane: ControlPlane, tmp_path: Path) -> None:
    assert control_plane.cli("runtime", "create", "idle").returncode == 0
    (tmp_path / "hello.yml").write_text(HELLO)
    assert control_plane.cli("pipeline", "create", "app", "--file", str(tmp_path / "hello.yml")).returncode == 0
    made = [control_plane.cli("run", "app", "--detach", "--branch", b).stdout.strip() for b in ("main", "x", "main")]

    def listed(*args: str) -> list[str]:
        done = control_plane.cli("build", "list", *args)
        assert done.returncode == 0, done.stderr
        return [line.split()[0] for line in done.stdout.splitlines() if line and line != "no builds"]

    assert listed("--branch", "main") == [made[2], made[0]]
    assert listed("--search", "MAI", "--limit", "1") == [made[2]]
    assert listed("--branch", "main", "--before", made[2]) == [made[0]]
    assert listed("--trigger", "webhook") == []
