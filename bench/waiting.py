"""Bounded waits: everything the benchmark waits for has a deadline, and a failure says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


class BenchError(Exception):
    """Something under test did not behave; the system it concerns is reported as skipped."""


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Calls `check` until it returns something other than None; connection errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = check()
        except (httpx.TransportError, OSError, ValueError) as exc:
            value, last_error = None, f" (last error: {type(exc).__name__}: {exc})"
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}{last_error}")
        time.sleep(interval)


def past(deadline: float) -> bool:
    return time.monotonic() > deadline


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds
