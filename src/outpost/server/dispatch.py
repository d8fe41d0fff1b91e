"""Wake-ups for long-polls, and the lease reaper with the control plane's own availability.

Runners' polls and log followers wait on a key ("runtime:ID", "build:ID"). A waiter takes a ticket
*before* it looks at the store, so a notification that lands between the look and the wait is not
missed. Waiters also re-check the store now and then, which keeps several control-plane processes
on one database correct, if slower.

The reaper is the only one that ends a lease for lack of heartbeats, and it judges that on the
control plane's own liveness (`Availability`): a stall of this process or of its database is never
read as the runners' fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outpost.server.models import Build
from outpost.server.store import builds as store

log = logging.getLogger("outpost.dispatch")


class Wakeups:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self.closing = False

    def close(self) -> None:
        """The server is stopping: every waiter returns now, and long polls stop waiting."""
        self.closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()

    def ticket(self, key: str) -> asyncio.Event:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        return event

    def notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float, *, unless: asyncio.Future[None] | None = None) -> None:
        """Until the ticket is woken, the seconds run out, or `unless` (the client hanging up) is done."""
        woken = asyncio.ensure_future(ticket.wait())
        waits: set[asyncio.Future[Any]] = {woken} if unless is None else {woken, unless}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()


@contextlib.asynccontextmanager
async def hang_up(receive: Any) -> AsyncIterator[asyncio.Future[None]]:
    """A future done when the client of the current request disconnects (for long polls).

    `receive` is the request's ASGI receive; call this only once the body has been read.
    """

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher: asyncio.Future[None] = asyncio.ensure_future(watch())
    try:
        yield watcher
    finally:
        watcher.cancel()


def runtime_key(runtime_id: str) -> str:
    return f"runtime:{runtime_id}"


def build_key(build_id: str) -> str:
    return f"build:{build_id}"


@dataclass(frozen=True)
class Tick:
    """When the reaper started a round, on both clocks."""

    monotonic: float
    wall: float


class Availability:
    """Since when this control-plane process has been able to hear its runners without a break.

    A break is anything that kept a heartbeat from being heard or answered: the process stopped
    (SIGSTOP, a VM paused) or starved, its wall clock jumping, the database holding up a transaction
    (a lock, a slow disk). Each break starts a new stretch; the reaper ends a lease only once the
    current stretch is a whole lease TTL long, so every runner had a full TTL of a responsive control
    plane to renew its lease. A restart is a break too: the stretch starts with the process.
    """

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance  # seconds of delay that count as a break
        self.since = time.monotonic()
        self._calls: dict[int, float] = {}  # runners' lease calls in progress, by when they began
        self._ids = itertools.count()

    def served_for(self) -> float:
        return time.monotonic() - self.since

    def broken(self, why: str) -> None:
        self.since = time.monotonic()
        log.warning("the control plane was not serving (%s): every lease gets a full TTL from now", why)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around a runner's call that renews a lease: one that takes longer than the tolerance
        (waiting for the database, say) is a break."""
        key = next(self._ids)
        began = self._calls[key] = time.monotonic()
        try:
            yield
        finally:
            del self._calls[key]
            took = time.monotonic() - began
            if took > self.tolerance:
                self.broken(f"a runner's call took {took:.1f}s")

    def tick(self) -> Tick:
        return Tick(time.monotonic(), time.time())

    def steady(self, tick: Tick, expected: float) -> bool:
        """Whether the round begun at `tick`, expected to take `expected` seconds so far, ran without
        a break; if not, a new stretch starts now."""
        took = time.monotonic() - tick.monotonic
        if took > expected + self.tolerance:
            self.broken(f"the reaper's round took {took:.1f}s instead of {expected:.1f}s")
            return False
        if abs((time.time() - tick.wall) - took) > self.tolerance:
            self.broken("the wall clock jumped")
            return False
        now = time.monotonic()
        stuck = [began for began in self._calls.values() if now - began > self.tolerance]
        if stuck:
            self.broken(f"{len(stuck)} runner call(s) waiting for more than {self.tolerance:.1f}s")
            return False
        return True


class _Stalled(Exception):
    """The reaper's transaction was held up: what it saw may be stale, so it is rolled back."""


async def reap_leases(
    sessions: async_sessionmaker[AsyncSession],
    wakeups: Wakeups,
    availability: Availability,
    *,
    interval: float,
    lease_ttl: float,
    max_requeues: int,
) -> None:
    """Forever: end leases past their expiry, requeue or fail their builds, wake whoever waits on them
    — but only after a whole lease TTL of uninterrupted service (`Availability`)."""
    while True:
        tick = availability.tick()
        await asyncio.sleep(interval)
        if not availability.steady(tick, interval) or availability.served_for() < lease_ttl:
            continue
        changed: list[Build] = []
        try:
            async with sessions.begin() as session:
                changed = await store.expire_leases(session, max_requeues)
                if changed and not availability.steady(tick, interval):
                    raise _Stalled
        except _Stalled:
            continue
        except Exception:  # a database hiccup must not end the reaper
            log.exception("lease reaper failed; retrying")
            changed = []
        availability.steady(tick, interval)  # a round held up by the database is a break, whatever it did
        for build in changed:
            log.info("lease of build %s expired: %s", build.id, build.status)
            wakeups.notify(build_key(build.id))
            if build.status == "queued":
                wakeups.notify(runtime_key(build.runtime_id))
