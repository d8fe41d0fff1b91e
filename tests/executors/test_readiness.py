"""`services.readiness` as every executor waits for it (`Readiness.wait`): passes and failures in a row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from outpost.errors import ExecutorError
from outpost.executors.base import Output, Readiness

Attempt = Callable[[], Awaitable[tuple[int, str]]]


def attempts(*codes: int) -> tuple[list[int], list[bytes], Attempt, Output]:
    """An attempt that answers `codes` in turn (a check's exit codes), and the output it was given."""
    left, seen, said = list(codes), list[int](), list[bytes]()

    async def attempt() -> tuple[int, str]:
        seen.append(left[0])
        return left.pop(0), " (last words)"

    async def output(data: bytes) -> None:
        said.append(data)

    return seen, said, attempt, output


async def test_the_services_are_ready_after_success_threshold_passes_in_a_row() -> None:
    seen, said, attempt, output = attempts(1, 0, 7, 0, 0)
    await Readiness(image="busybox", script="true", period=0, success_threshold=2).wait(attempt, output)
    assert seen == [1, 0, 7, 0, 0]  # the pass before 7 did not count: not in a row
    assert said[-1] == b"[outpost] services ready (readiness check passed, attempt 5)\n"
    assert b"[outpost] readiness check exited with 7 (attempt 3) (last words)\n" in said


async def test_failure_threshold_failures_in_a_row_end_the_step_with_the_reason() -> None:
    seen, said, attempt, output = attempts(1, -1, 2, 0)
    with pytest.raises(ExecutorError, match="readiness failed 3 times"):
        await Readiness(image="busybox", script="false", period=0, failure_threshold=3).wait(attempt, output)
    assert seen == [1, -1, 2]
    assert b"[outpost] readiness check timed out or could not run (attempt 2) (last words)\n" in said
