"""Runner passes: what a look at the store last proved of a runner token (whose runner it is, not revoked, drained or
not), so that a poll renewal with nothing to look up needs no transaction at all.

A pass is only as good as the signals that end it. Every change to what it vouches for (a revocation, a drain or an
undrain) signals the runner to the dispatcher after its commit (`Wakeups.runner`), here or through another replica's
NOTIFY, and that signal forgets the runner's pass before anything else runs, so the runner's next call is checked
against the store again. A look whose transaction may predate such a signal does not leave a pass behind (`mark`,
as the dispatcher's quiet runtimes do); `clear` (the replica link came back, signals may have been lost) forgets
every pass, and a pass vouches for at most `PASS_TRUST` seconds in any case. A pass never hands out work: every look
that could (a wake-up, a runtime that is not quiet, a build the runner reports running) reads the runner from the
store in its own transaction, so a pass only ever decides that a poll may wait.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PASS_TRUST = 300.0  # seconds a look at the store vouches for a runner token (signals end a pass sooner)
MAX_PASSES = 100_000  # beyond this many, the oldest are forgotten
MAX_ENDED = 10_000  # forgotten runners remembered by number; beyond this many every older look is refused a pass


@dataclass(frozen=True)
class Pass:
    runner_id: str
    runtime_id: str
    drained: bool
    since: float  # monotonic: when the look that proved it began


class Passes:
    """Passes by token hash. `mark()` before a look's transaction, `remember(...)` after it."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Pass] = {}
        self._hash_of: dict[str, str] = {}  # runner id -> its token hash
        self._count = 0  # signals that ended passes, numbered
        self._ended: dict[str, int] = {}  # runner id -> the number of the last signal that ended its pass
        self._floor = 0  # looks begun before this number get no pass

    def __len__(self) -> int:
        return len(self._by_hash)

    def mark(self) -> tuple[int, float]:
        return self._count, time.monotonic()

    def get(self, hashed: str) -> Pass | None:
        found = self._by_hash.get(hashed)
        if found is not None and time.monotonic() - found.since > PASS_TRUST:
            self._drop(hashed)
            return None
        return found

    def remember(self, hashed: str, mark: tuple[int, float], *, runner_id: str, runtime_id: str, drained: bool) -> None:
        """A look begun at `mark` read this runner, not revoked: its token gets a pass, unless a signal for the
        runner came since (the look's snapshot may predate what the signal told)."""
        count, since = mark
        if count < self._floor or self._ended.get(runner_id, -1) > count:
            return
        old = self._hash_of.get(runner_id)
        if old is not None and old != hashed:
            self._by_hash.pop(old, None)
        self._by_hash[hashed] = Pass(runner_id, runtime_id, drained, since)
        self._hash_of[runner_id] = hashed
        if len(self._by_hash) > MAX_PASSES:
            self._drop(next(iter(self._by_hash)))

    def forget(self, runner_id: str) -> None:
        """Something changed for the runner (its revocation, a drain): its next call is checked against the store."""
        self._count += 1
        self._ended[runner_id] = self._count
        if len(self._ended) > MAX_ENDED:
            self._ended.clear()
            self._floor = self._count
        hashed = self._hash_of.pop(runner_id, None)
        if hashed is not None:
            self._by_hash.pop(hashed, None)

    def clear(self) -> None:
        """Signals may have been lost: no pass is trusted, nor is any look already begun."""
        self._count += 1
        self._floor = self._count
        self._ended.clear()
        self._by_hash.clear()
        self._hash_of.clear()

    def _drop(self, hashed: str) -> None:
        gone = self._by_hash.pop(hashed, None)
        if gone is not None and self._hash_of.get(gone.runner_id) == hashed:
            del self._hash_of[gone.runner_id]
