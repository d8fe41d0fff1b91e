"""How the engine tells the world what happens: the `Reporter` it is given, and everything written through it
with the build's secrets masked: streamed step output (`masked_log`), one-shot log lines and the messages of step
updates (`MaskedReporter`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

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


class MaskedOutput:
    """An `Output` into one stream of the build's log, masking the secrets it was made with, across chunk boundaries.
    `stream` and `held` let an executor whose step output outlives the engine (an engine pod's step pods) record how
    far the log has it (and what it masks): `held` bytes of what was fed are kept back (a possible beginning of a
    secret), not yet shown."""

    def __init__(self, reporter: Reporter, stream: str, secrets: Iterable[str]) -> None:
        self.stream = stream
        self.secrets = frozenset(secrets)
        self._masker = Masker(self.secrets)
        self._outer = reporter if isinstance(reporter, MaskedReporter) else None
        self._reporter = self._outer.inner if self._outer else reporter  # masked here, once

    @property
    def held(self) -> int:
        return self._masker.held

    async def __call__(self, chunk: bytes) -> None:
        if shown := self._masker.feed(chunk):
            await self._write(shown)

    async def close(self) -> None:
        if rest := self._masker.flush():
            await self._write(rest)

    async def _write(self, data: bytes) -> None:
        if self._outer:
            self._outer.wrote(self.stream, data)
        await self._reporter.log(self.stream, data)


@contextlib.asynccontextmanager
async def masked_log(reporter: Reporter, stream: str, secrets: Iterable[str]) -> AsyncIterator[MaskedOutput]:
    """An `Output` into `stream` that masks the secrets known when it opens; what it held back (a possible
    beginning of a secret) is logged when it closes."""
    output = MaskedOutput(reporter, stream, secrets)
    try:
        yield output
    finally:
        await output.close()


async def log_system(reporter: Reporter, secrets: Iterable[str], text: str) -> None:
    """One `[outpost]` message in the build's own log, masked."""
    masker = Masker(secrets)
    shown = masker.feed(f"[outpost] {text}".encode()) + masker.flush()
    await reporter.log(SYSTEM_STREAM, shown)
