"""The rule for missing components, as a developer running `make test` on a bare machine sees it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
from tests.components import need

def test_needs_a_frobnicator():
    need(False, "frobnicator is not installed (apt-get install frobnicator)")

def test_needs_it_too():
    need(False, "frobnicator is not installed (apt-get install frobnicator)")

def test_needs_nothing():
    pass
"""


def run_probe(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(ROOT)}
    if ci:
        env["CI"] = "true"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(tmp_path),
    ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_a_local_run_ends_by_naming_the_missing_components_and_how_many_tests_they_skipped(tmp_path: Path) -> None:
    result = run_probe(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "components missing on this machine" in result.stdout
    assert "2 skipped: frobnicator is not installed (apt-get install frobnicator)" in result.stdout
    assert ".ci/system-deps" in result.stdout


def test_under_ci_a_missing_component_fails_the_run(tmp_path: Path) -> None:
    result = run_probe(tmp_path, ci=True)
    assert result.returncode == 1
    assert "2 failed, 1 passed" in result.stdout
    assert "missing component under CI=true: frobnicator" in result.stdout
