"""How the engine tells the world what happens: the `Reporter` it is given, and everything written through it
with the build's secrets masked: streamed step output (`masked_log`), one-shot log lines and the messages of step
updates (`MaskedReporter`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from outpost.executors.base import Output
from outpost.masking import Masker
from outpost.wire import SYSTEM_STREAM, BuildStarted, StepUpdate


class Reporter(Protocol):
    """Where the engine sends what happens. Calls return once the report is safely queued."""

    async def started(self, message: BuildStarted) -> None: ...

    async def step(self, name: str, update: StepUpdate) -> None: ...

    async def log(self, stream: str, data: bytes) -> None: ...


class MaskedReporter:
    """A Reporter that masks the values in `secrets` (the set as it is at each call: `cf_export --mask` adds to it)
    in whole log lines and in step titles and messages (a failure or approval message may quote a secret). Streamed
    output goes through `masked_log`, which masks across chunk boundaries and writes to `inner` directly."""

    def __init__(self, inner: Reporter, secrets: set[str]) -> None:
        self.inner = inner
        self.secrets = secrets
        self._masker, self._known = Masker(), frozenset[str]()
        self.at_line_start: dict[str, bool] = {}  # stream -> its log so far is empty or ends with a newline

    def wrote(self, stream: str, data: bytes) -> None:
        if data:
            self.at_line_start[stream] = data.endswith(b"\n")

    def masker(self) -> Masker:
        """A fresh masker for the secrets as they are now (made again only when they changed)."""
        if self._known != self.secrets:
            self._known = frozenset(self.secrets)
            self._masker = Masker(self._known)
        self._masker.flush()  # whole messages only: nothing is ever held across calls
        return self._masker

    def mask(self, text: str | None) -> str | None:
        return self.masker().mask(text) if text else text

    async def started(self, message: BuildStarted) -> None:
        await self.inner.started(message)

    async def step(self, name: str, update: StepUpdate) -> None:
        if update.message or update.title:
            update = update.model_copy(update={"message": self.mask(update.message), "title": self.mask(update.title)})
        await self.inner.step(name, update)

    async def log(self, stream: str, data: bytes) -> None:
        masker = self.masker()
        shown = masker.feed(data) + masker.flush()
        self.wrote(stream, shown)
        await self.inner.log(stream, shown)

    async def note(self, stream: str, text: str) -> None:
        """An `[outpost]` line in a step's log, on a line of its own: a break only after output that did
        not end its line (no blank line otherwise)."""
        start = "" if self.at_line_start.get(stream, True) else "\n"
        await self.log(stream, f"{start}[outpost] {text}\n".encode())


@contextlib.asynccontextmanager
async def masked_log(reporter: Reporter, stream: str, secrets: Iterable[str]) -> AsyncIterator[Output]:
    """An `Output` into `stream` that masks the secrets known when it opens; what it held back (a possible
    beginning of a secret) is logged when it closes."""
    masker = Masker(secrets)
    outer = reporter if isinstance(reporter, MaskedReporter) else None
    reporter = outer.inner if outer else reporter  # masked here, once

    async def write(data: bytes) -> None:
        if outer:
            outer.wrote(stream, data)
        await reporter.log(stream, data)

    async def output(chunk: bytes) -> None:
        if shown := masker.feed(chunk):
            await write(shown)

    try:
        yield output
    finally:
        if rest := masker.flush():
            await write(rest)


async def log_system(reporter: Reporter, secrets: Iterable[str], text: str) -> None:
    """One `[outpost]` message in the build's own log, masked."""
    masker = Masker(secrets)
    shown = masker.feed(f"[outpost] {text}".encode()) + masker.flush()
    await reporter.log(SYSTEM_STREAM, shown)
