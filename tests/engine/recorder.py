"""An in-memory Reporter: what the engine reported, for assertions."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from outpost.wire import BuildStarted, StepUpdate


@dataclass
class Recorder:
    plans: list[BuildStarted] = field(default_factory=list)
    updates: list[tuple[str, StepUpdate]] = field(default_factory=list)
    logs: dict[str, bytearray] = field(default_factory=lambda: defaultdict(bytearray))

    async def started(self, message: BuildStarted) -> None:
        self.plans.append(message)

    async def step(self, name: str, update: StepUpdate) -> None:
        self.updates.append((name, update))

    async def log(self, stream: str, data: bytes) -> None:
        self.logs[stream] += data

    def final(self, name: str) -> StepUpdate:
        return [u for n, u in self.updates if n == name][-1]

    def text(self, name: str) -> str:
        return bytes(self.logs[name]).decode()
