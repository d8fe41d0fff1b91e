"""The last guard against a test that hangs where nothing else would say so.

pytest-timeout and pytest's own faulthandler timeout both stop watching a test the moment it fails: their
`pytest_exception_interact` hooks cancel the timers. A fixture teardown that then blocks (a server that will not
stop, a thread that is never joined) waits silently until CI's own limit, and the log shows nothing useful.

This watchdog covers setup, call and teardown whatever happened in them. When a test runs past its timeout plus a
grace period it writes every thread's stack, then interrupts the main thread with a failure that carries those
stacks: the stuck test is reported as failed or errored, with the place it was stuck, and the run goes on. If the
main thread is still stuck a minute later (blocked where no signal reaches Python), the stacks are printed on the
real terminal and the run ends with exit code 70, so the end of the log says where.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Generator
from typing import Any

import pytest

# Beyond the test's own timeout: pytest-timeout is the first to speak when it still can. The variables are for
# tests/test_watchdog.py, which runs the watchdog on purpose-made hangs in a few seconds.
GRACE = float(os.environ.get("OUTPOST_WATCHDOG_GRACE", "120"))
LAST_CHANCE = float(os.environ.get("OUTPOST_WATCHDOG_LAST_CHANCE", "60"))  # after the interruption, before the end
UNLIMITED = 1800.0  # what a test that switched pytest-timeout off gets
EXIT_CODE = 70

_current: dict[str, Any] = {}  # nodeid and phase of the test being watched


def thread_stacks() -> str:
    """Every thread's current stack, the main thread first."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    frames = sys._current_frames()
    main = threading.main_thread().ident
    parts = []
    for ident in sorted(frames, key=lambda i: (i != main, names.get(i, ""))):
        if ident == threading.get_ident():
            continue  # the watchdog itself
        stack = "".join(traceback.format_stack(frames[ident]))
        parts.append(f"--- thread {names.get(ident, '?')} ({ident}) ---\n{stack}")
    return "\n".join(parts)


def _budget(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    value = marker.args[0] if marker is not None and marker.args else item.config.getini("timeout")
    timeout = float(value or 0)
    return (timeout if timeout > 0 else UNLIMITED) + GRACE


def _interrupt(signum: int, frame: object) -> None:
    stacks = _current.get("stacks", "")
    pytest.fail(
        f"watchdog: {_current.get('nodeid')} was still in {_current.get('phase')} after "
        f"{_current.get('budget', 0):.0f} s; every thread's stack at that moment:\n{stacks}",
        pytrace=True,
    )


class _Watch:
    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.budget = _budget(item)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name=f"watchdog {item.nodeid}", daemon=True)

    def _watch(self) -> None:
        if self.done.wait(self.budget):
            return
        stacks = thread_stacks()
        _current.update(stacks=stacks, budget=self.budget)
        with contextlib.suppress(OSError):
            os.write(2, f"\nwatchdog: {self.item.nodeid} is stuck in {_current.get('phase')}:\n{stacks}\n".encode())
        main = threading.main_thread().ident
        if main is not None:
            signal.pthread_kill(main, signal.SIGUSR1)
        if self.done.wait(LAST_CHANCE):
            return
        capture = self.item.config.pluginmanager.getplugin("capturemanager")
        with contextlib.suppress(Exception):
            capture.suspend_global_capture(in_=True)
        sys.stderr.write(
            f"\nwatchdog: {self.item.nodeid} did not come back from {_current.get('phase')} "
            f"{LAST_CHANCE:.0f} s after it was interrupted; ending the run. Every thread's stack:\n"
            f"{thread_stacks()}\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_CODE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGUSR1, _interrupt)
    watch = _Watch(item)
    _current.clear()
    _current.update(nodeid=item.nodeid, phase="setup")
    watch.thread.start()
    try:
        yield
    finally:
        watch.done.set()
        watch.thread.join(timeout=5)
        signal.signal(signal.SIGUSR1, previous)
        _current.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    _current["phase"] = "call"
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    _current["phase"] = "teardown"
    yield
