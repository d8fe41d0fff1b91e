"""Slowing down password guessing on the login form without locking the real user out.

Failures are counted per (client address, username). The first `free_failures` cost nothing; after that, the
pair must wait before its next try: `delay`, then twice as long after each further failure, up to `max_delay`.
A try during the wait is answered 429 without looking at the password, so a guesser gets a handful of tries
an hour, while the same user logging in from another address is not slowed at all. A success clears the pair.

On SQLite (one server process) the counts live in this process's memory, and a restart forgets them; on
PostgreSQL they live in the database (`SharedLoginLockout`, store/limits.py), so replicas count together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outpost.server.store import limits
from outpost.settings import ServerSettings

if TYPE_CHECKING:
    from starlette.datastructures import State


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
        if hold := self.hold(failures.count):
            failures.until = now + hold
        if len(self._pairs) > self.MAX_PAIRS:
            for stale in sorted(self._pairs, key=lambda k: self._pairs[k].last)[: self.MAX_PAIRS // 10]:
                del self._pairs[stale]

    def succeeded(self, address: str, username: str) -> None:
        self._pairs.pop(_key(address, username), None)

    def hold(self, failures: int) -> float:
        """How long a pair waits after its `failures`-th failure in a row (0.0: the first ones are free)."""
        beyond = failures - self.free_failures
        return min(self.max_delay, self.delay * 2 ** min(beyond - 1, 30)) if beyond > 0 else 0.0

    # What the login form calls: the same on both kinds.
    async def check(self, address: str, username: str) -> float:
        return self.wait(address, username)

    async def record_failure(self, address: str, username: str) -> None:
        self.failed(address, username)

    async def record_success(self, address: str, username: str) -> None:
        self.succeeded(address, username)


class SharedLoginLockout(LoginLockout):
    """The same policy with the counts in the database (store/limits.py), for replicas on one PostgreSQL. Its
    clock is the wall clock: replicas share no monotonic one."""

    def __init__(self, state: State, free_failures: int = 5, delay: float = 1.0, max_delay: float = 900.0) -> None:
        super().__init__(free_failures, delay, max_delay, clock=time.time)
        self.state = state  # the app's: its services exist once the app has started

    @classmethod
    def for_app(cls, state: State, settings: ServerSettings) -> SharedLoginLockout:
        return cls(state, settings.login_free_failures, settings.login_delay, settings.login_max_delay)

    async def check(self, address: str, username: str) -> float:
        address, username = _key(address, username)
        async with self.state.services.tx() as session:
            return await limits.login_wait(session, address, username, self.clock())

    async def record_failure(self, address: str, username: str) -> None:
        address, username = _key(address, username)
        now = self.clock()
        async with self.state.services.tx() as session:
            count = await limits.login_failed(session, address, username, now, quiet=2 * self.max_delay)
            if hold := self.hold(count):
                await limits.login_hold(session, address, username, now + hold)

    async def record_success(self, address: str, username: str) -> None:
        address, username = _key(address, username)
        async with self.state.services.tx() as session:
            await limits.login_succeeded(session, address, username)


def _key(address: str, username: str) -> tuple[str, str]:
    return address, username.strip().lower()
