"""Slowing down password guessing on the login form without locking the real user out.

Failures are counted per (client address, username). The first `free_failures` cost nothing; after that, the
pair must wait before its next try: `delay`, then twice as long after each further failure, up to `max_delay`.
A try during the wait is answered 429 without looking at the password, so a guesser gets a handful of tries
an hour, while the same user logging in from another address is not slowed at all. A success clears the pair.

Counts live in this process's memory: a restart forgets them, and each server process counts alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from outpost.settings import ServerSettings


@dataclass
class _Failures:
    count: int
    until: float  # no try before this (monotonic clock)
    last: float


class LoginLockout:
    MAX_PAIRS = 100_000  # beyond this, pairs idle the longest are forgotten first

    def __init__(
        self,
        free_failures: int = 5,
        delay: float = 1.0,
        max_delay: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.delay = delay
        self.max_delay = max_delay
        self.clock = clock
        self._pairs: dict[tuple[str, str], _Failures] = {}

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> LoginLockout:
        return cls(settings.login_free_failures, settings.login_delay, settings.login_max_delay)

    def wait(self, address: str, username: str) -> float:
        """Seconds before this address may try this username again (0.0: now)."""
        failures = self._pairs.get(_key(address, username))
        return max(0.0, failures.until - self.clock()) if failures else 0.0

    def failed(self, address: str, username: str) -> None:
        now = self.clock()
        key = _key(address, username)
        failures = self._pairs.get(key)
        if failures is None or now - failures.last > 2 * self.max_delay:  # long quiet: start over
            failures = self._pairs[key] = _Failures(0, now, now)
        failures.count += 1
        failures.last = now
        beyond = failures.count - self.free_failures
        if beyond > 0:
            failures.until = now + min(self.max_delay, self.delay * 2 ** min(beyond - 1, 30))
        if len(self._pairs) > self.MAX_PAIRS:
            for stale in sorted(self._pairs, key=lambda k: self._pairs[k].last)[: self.MAX_PAIRS // 10]:
                del self._pairs[stale]

    def succeeded(self, address: str, username: str) -> None:
        self._pairs.pop(_key(address, username), None)


def _key(address: str, username: str) -> tuple[str, str]:
    return address, username.strip().lower()
