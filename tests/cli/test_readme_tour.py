"""The README's tour, run line by line exactly as written (parsed out of README.md, so the test follows the
README), against `outpost up` the way the README says to reach it from elsewhere (OUTPOST_CONFIG)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import Process, eventually, outpost_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def tour() -> tuple[str, list[str]]:
    """The tour's shell block: its set-up line and its `outpost` commands."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's tour has no ```sh block"
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    setup = [line for line in lines if not line.startswith("outpost ")]
    assert setup == ["source .venv/bin/activate"], setup
    return setup[0], [line for line in lines if line.startswith("outpost ")]


def test_the_readme_tour_names_files_that_exist_in_the_repository() -> None:
    _, commands = tour()
    named = {Path(word) for line in commands for word in line.split() if word.endswith((".yml", ".yaml"))}
    assert named, "the tour names no pipeline file"
    for path in named:
        assert (ROOT / path).is_file(), f"the README's tour names {path}, which is not in the repository"


def test_every_command_of_the_readme_tour_works_as_written(tmp_path: Path, processes: list[Process]) -> None:
    setup, commands = tour()
    data = tmp_path / "data"
    args = ["up", "--port", "0", "--data-dir", str(data)]
    up = Process("outpost up", args, tmp_path / "up.log", outpost_env(), cwd=tmp_path)
    processes.append(up)
    up.start()
    eventually(lambda: "Press Ctrl-C to stop." in up.output(), timeout=90, what="outpost up and its example")
    env = {**outpost_env(), "OUTPOST_CONFIG": str(data / "cli.json")}

    def shell(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"{setup} && {line}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    listed = shell("outpost build list --json")
    build_id = json.loads(listed.stdout)[0]["id"]  # the example build `outpost up` ran
    outputs = {}
    for line in commands:
        done = shell(line.replace("BUILD_ID", build_id))
        assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        outputs[line.split("#")[0].strip()] = done.stdout + done.stderr
    assert "Hello, you!" in outputs["outpost run hello --var NAME=you"]
    assert build_id[:8] in outputs["outpost build list"]
    assert "valid:" in outputs["outpost validate examples/hello/codefresh.yml"]
    assert "NAME=team" in outputs["outpost pipeline show my-app"]
    assert "Hello, team!" in outputs["outpost run my-app"]
    up.signal(signal.SIGINT)
    assert up.wait(30) == 0
