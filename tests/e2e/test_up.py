"""`outpost up`: the newcomer's first command, and the two-command promise behind `make run`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests import containers
from tests.containers import Dockerd
from tests.e2e.processes import Process, eventually, outpost_env

dockerd, busybox_image = containers.dockerd, containers.busybox_image


def test_up_runs_the_example_configures_the_cli_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, processes: list[Process]
) -> None:
    up = Process("outpost up", ["up", "--port", "0"], tmp_path / "up.log", outpost_env(), cwd=tmp_path)
    processes.append(up)
    up.start()

    eventually(lambda: "build" in up.output() and "success in" in up.output(), timeout=60, what="the example")
    out = up.output()
    assert "Hello, newcomer!" in out
    assert "greeted before? yes" in out
    assert "Outpost is up: API http://127.0.0.1:" in out
    token_file = tmp_path / ".outpost" / "admin-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"

    # In the same folder, the CLI needs no flags.
    env = {k: v for k, v in outpost_env().items() if k not in ("OUTPOST_URL", "OUTPOST_TOKEN")}
    listed = subprocess.run(
        [sys.executable, "-m", "outpost", "build", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    builds = json.loads(listed.stdout)
    assert [b["pipeline"] for b in builds] == ["hello"]
    assert builds[0]["status"] == "success"

    up.signal(signal.SIGINT)
    assert up.wait(30) == 0
    assert "stopped." in up.output()


def test_up_with_no_example_uses_the_given_folder_and_port(tmp_path: Path, processes: list[Process]) -> None:
    data = tmp_path / "elsewhere"
    up = Process(
        "outpost up",
        ["up", "--port", "0", "--host", "127.0.0.1", "--data-dir", str(data), "--no-example"],
        tmp_path / "up.log",
        outpost_env(),
        cwd=tmp_path,
    )
    processes.append(up)
    up.start()
    eventually(lambda: "Press Ctrl-C to stop." in up.output(), timeout=60, what="outpost up to be ready")
    assert (data / "admin-token").exists()
    config = json.loads((data / "cli.json").read_text())
    assert config["url"].startswith("http://127.0.0.1:")
    assert f"export OUTPOST_CONFIG={(data / 'cli.json').resolve()}" in up.output()
    env = {**outpost_env(), "OUTPOST_CONFIG": str(data / "cli.json")}
    listed = subprocess.run(
        [sys.executable, "-m", "outpost", "build", "list", "--json"], env=env, capture_output=True, text=True
    )
    assert json.loads(listed.stdout) == []
    up.signal(signal.SIGTERM)
    assert up.wait(30) == 0


def test_up_with_the_docker_executor_runs_steps_in_their_images(
    tmp_path: Path, processes: list[Process], dockerd: Dockerd, busybox_image: str
) -> None:
    data = tmp_path / "data"
    args = ["up", "--port", "0", "--data-dir", str(data), "--no-example", "--executor", "docker"]
    up = Process("outpost up", [*args, "--docker-host", dockerd.host], tmp_path / "up.log", outpost_env(), cwd=tmp_path)
    processes.append(up)
    up.start()
    eventually(lambda: "Press Ctrl-C to stop." in up.output(), timeout=60, what="outpost up to be ready")
    env = {**outpost_env(), "OUTPOST_CONFIG": str(data / "cli.json")}

    def cli(*words: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "outpost", *words]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    pipeline = tmp_path / "codefresh.yml"
    pipeline.write_text(
        "version: '1.0'\nsteps:\n  inside:\n"
        f"    image: {busybox_image}\n"
        "    commands:\n"
        "      - test -x /bin/busybox && test ! -e /usr/bin/python3 && echo 'in the busybox image'\n"
        '      - echo "volume at $CF_VOLUME_PATH"\n'
    )
    assert cli("pipeline", "create", "boxed", "--file", str(pipeline)).returncode == 0
    run = cli("run", "boxed")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "in the busybox image" in run.stdout
    assert "volume at /codefresh/volume" in run.stdout
    runners = json.loads(cli("runners", "list", "--json").stdout)
    assert [r["executor"] for r in runners] == ["docker"]
    up.signal(signal.SIGINT)
    assert up.wait(30) == 0
    assert dockerd.containers("io.outpost.build") == []
