"""Wake-ups for long-polls and the lease reaper.

Runners' polls and log followers wait on a key ("runtime:ID", "build:ID"). A waiter takes a ticket
*before* it looks at the store, so a notification that lands between the look and the wait is not
missed. Waiters also re-check the store now and then, which keeps several control-plane processes
on one database correct, if slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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


async def reap_leases(
    sessions: async_sessionmaker[AsyncSession], wakeups: Wakeups, *, interval: float, max_requeues: int
) -> None:
    """Forever: end expired leases, requeue or fail their builds, wake whoever waits on them."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with sessions.begin() as session:
                changed = await store.expire_leases(session, max_requeues)
        except Exception:  # a database hiccup must not end the reaper
            log.exception("lease reaper failed; retrying")
            continue
        for build in changed:
            log.info("lease of build %s expired: %s", build.id, build.status)
            wakeups.notify(build_key(build.id))
            if build.status == "queued":
                wakeups.notify(runtime_key(build.runtime_id))
