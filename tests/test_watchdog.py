"""The suite's hang guard (tests/watchdog.py), run on purpose-made hangs in a pytest of its own.

The case that matters: a test fails, then its fixture's teardown blocks. pytest-timeout and faulthandler have
stopped watching by then; without the watchdog such a run waits for CI's limit and says nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent

HANGS = """
import threading
import pytest

@pytest.fixture
def stuck_teardown():
    yield
    threading.Event().wait()  # a server loop that never stops, say

@pytest.fixture
def deaf_teardown():
    yield
    while True:  # swallows every interruption: only ending the run helps
        try:
            threading.Event().wait()
        except BaseException:
            pass

@pytest.mark.timeout(1)
def test_fails_then_its_teardown_hangs(stuck_teardown):
    assert "failure" == "success"

def test_after_the_hang():
    pass

@pytest.mark.timeout(1)
def test_z_deaf(deaf_teardown):
    assert False
"""


def run_pytest(tmp_path: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.watchdog"]\n')
    (tmp_path / "test_hangs.py").write_text(HANGS)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OUTPOST_WATCHDOG_GRACE": "2",
        "OUTPOST_WATCHDOG_LAST_CHANCE": "2",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), *selection],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_teardown_hang_after_a_failure_is_reported_with_its_stack_and_the_run_goes_on(tmp_path: Path) -> None:
    hang, after = "test_hangs.py::test_fails_then_its_teardown_hangs", "test_hangs.py::test_after_the_hang"
    done = run_pytest(tmp_path, hang, after)
    out = done.stdout
    assert "1 failed, 1 passed, 1 error" in out, out
    assert "watchdog: test_hangs.py::test_fails_then_its_teardown_hangs was still in teardown" in out, out
    assert "in stuck_teardown" in out, out  # the stack says where it was stuck


def test_a_hang_that_swallows_the_interruption_ends_the_run_with_the_stacks_on_the_terminal(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "test_hangs.py::test_z_deaf")
    assert done.returncode == 70, done.stdout + done.stderr
    assert "did not come back from teardown" in done.stderr, done.stderr
    assert "in deaf_teardown" in done.stderr, done.stderr
