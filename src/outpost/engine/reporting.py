"""How the engine tells the world what happens: the `Reporter` it is given, and logs written through it with
the build's secrets masked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from outpost.engine.masking import Masker
from outpost.executors.base import Output
from outpost.wire import SYSTEM_STREAM, BuildStarted, StepUpdate


class Reporter(Protocol):
    """Where the engine sends what happens. Calls return once the report is safely queued."""

    async def started(self, message: BuildStarted) -> None: ...

    async def step(self, name: str, update: StepUpdate) -> None: ...

    async def log(self, stream: str, data: bytes) -> None: ...


@contextlib.asynccontextmanager
async def masked_log(reporter: Reporter, stream: str, secrets: Iterable[str]) -> AsyncIterator[Output]:
    """An `Output` into `stream` that masks the secrets known when it opens; what it held back (a possible
    beginning of a secret) is logged when it closes."""
    masker = Masker(secrets)

    async def output(chunk: bytes) -> None:
        if shown := masker.feed(chunk):
            await reporter.log(stream, shown)

    try:
        yield output
    finally:
        if rest := masker.flush():
            await reporter.log(stream, rest)


async def log_system(reporter: Reporter, secrets: Iterable[str], text: str) -> None:
    """One `[outpost]` message in the build's own log, masked."""
    masker = Masker(secrets)
    shown = masker.feed(f"[outpost] {text}".encode()) + masker.flush()
    await reporter.log(SYSTEM_STREAM, shown)
