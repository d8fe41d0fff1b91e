"""Scopes: sets of steps that are stopped together, and the ways a step waits so that a stop (or its
timeout) cuts the wait short."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from outpost.engine.results import StepResult, duration
from outpost.errors import ExecutorError
from outpost.pipelines.spec import Step

T = TypeVar("T")


class Scope:
    """A set of steps that can be stopped together: the whole build (cancel), or the steps of a
    `mode: parallel` pipeline when one of them fails fast."""

    def __init__(self, parent: Scope | None = None) -> None:
        self.parent = parent
        self.event = asyncio.Event()
        self.reason = ""

    def stop(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set() or (self.parent is not None and self.parent.stopped)

    @property
    def why(self) -> str:
        if self.event.is_set():
            return self.reason
        return self.parent.why if self.parent is not None else ""

    def events(self) -> list[asyncio.Event]:
        return [self.event, *(self.parent.events() if self.parent else [])]


async def race(
    step: Step, scope: Scope, work: Awaitable[T], paused: Callable[[], float] = lambda: 0.0
) -> T | StepResult:
    """Runs `work` until it ends (its value, or its exception), the step times out or its scope is stopped
    (then `work` is cancelled and the step's result says which). `paused`: the executor's seconds paused so
    far (the runner froze the steps), which do not count against the timeout."""
    task = asyncio.ensure_future(work)
    stops = [asyncio.create_task(e.wait()) for e in scope.events()]
    loop = asyncio.get_running_loop()
    began, paused_before = loop.time(), paused()
    try:
        while not task.done() and not any(s.done() for s in stops):
            left = None if step.timeout is None else step.timeout - (loop.time() - began - (paused() - paused_before))
            if left is not None and left <= 0:
                break
            await asyncio.wait({task, *stops}, timeout=left, return_when="FIRST_COMPLETED")
    except asyncio.CancelledError:
        task.cancel()  # an executor kills the step's processes before this await returns
        with contextlib.suppress(asyncio.CancelledError, ExecutorError):
            await task
        raise
    finally:
        for s in stops:
            s.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ExecutorError):
        await task
    if scope.stopped:
        return StepResult("terminated", message=scope.why)
    return StepResult("failure", message=f"step timed out after {duration(step.timeout or 0)}")


async def sleep(seconds: float, scope: Scope) -> bool:
    """Waits; True if the scope was stopped meanwhile."""
    stops = [asyncio.create_task(e.wait()) for e in scope.events()]
    try:
        await asyncio.wait(stops, timeout=seconds)
    finally:
        for s in stops:
            s.cancel()
    return scope.stopped
