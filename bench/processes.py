"""Background processes the benchmark starts: each in a session of its own, logged to a file, always stopped.

`Processes` is a context manager; leaving it (normally, on an error or on Ctrl-C) stops what it started,
newest first: SIGTERM to the process group, SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self, TypeVar

from waiting import BenchError, wait_until

T = TypeVar("T")

# Variables that could send our traffic elsewhere or point the CLI at another installation.
DROPPED_PREFIXES = ("OUTPOST_", "PREFECT_")
DROPPED = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED and not k.startswith(DROPPED_PREFIXES)}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


class Background:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, check: Callable[[], T | None], what: str, *, timeout: float = 90.0) -> T:
        """`wait_until`, but gives up at once, with the end of its log, if the process exits."""

        def alive_check() -> T | None:
            if not self.alive():
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return check()

        return wait_until(alive_check, timeout=timeout, what=what)

    def stop(self, grace: float) -> str | None:
        """SIGTERM to the whole group (its own session: only what we started), SIGKILL if still there.

        Returns a remark when the process had to be killed.
        """
        remark = None
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            remark = f"{self.name} was still running {grace:g} s after SIGTERM and was killed"
        _signal_group(self.proc.pid, signal.SIGKILL)  # also children left behind by a clean exit
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5.0)
        return remark


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Processes:
    def __init__(self, logs: Path, *, grace: float = 10.0) -> None:
        self.logs = logs
        self.grace = grace
        self.started: list[Background] = []
        self.remarks: list[str] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> Background:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name.replace(' ', '-')}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env=child_env(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Background(name, proc, log)
        self.started.append(started)
        return started

    def stop_all(self) -> None:
        while self.started:
            remark = self.started.pop().stop(self.grace)
            if remark:
                self.remarks.append(remark)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (even when started in the background, where SIGINT comes ignored) unwind like Ctrl-C,
    through every `with Processes(...)`, which stops what it started."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
