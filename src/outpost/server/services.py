"""What every request handler needs, built once when the app starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from outpost.server.arrivals import Arrivals
from outpost.server.dispatch import Availability, Wakeups
from outpost.server.metrics import ServerMetrics
from outpost.server.presence import Presence
from outpost.server.secrets import SecretBox
from outpost.server.store import accounts
from outpost.settings import ServerSettings

if TYPE_CHECKING:
    from outpost.server.api.deps import Access
    from outpost.server.replicas import ReplicaLink


@dataclass
class Services:
    settings: ServerSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    wakeups: Wakeups
    public_url: str
    secrets: SecretBox
    availability: Availability  # since when this process has served runners without a break (the reaper's judge)
    # Work a request started and left running (a webhook waiting for changed files); cancelled on shutdown.
    background: set[asyncio.Task[None]] = field(default_factory=set)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)  # what /metrics shows (server/metrics.py)
    replicas: ReplicaLink | None = None  # on PostgreSQL: this replica's link to the others (server/replicas.py)
    presence: Presence = field(default_factory=Presence)  # runners heard from, written once a second
    arrivals: Arrivals = field(default_factory=Arrivals)  # reports being handled, by build (server/arrivals.py)

    def leads(self) -> bool:
        """Whether this process runs the background jobs (the lease reaper, cron): always on SQLite, and on
        PostgreSQL while it holds the jobs' lock."""
        return self.replicas is None or self.replicas.leader

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` after the request has been answered; `stop_background` cancels it."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def stop_background(self) -> None:
        tasks = list(self.background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # each task logs its own failures

    def build_url(self, build_id: str) -> str:
        return f"{self.public_url}/builds/{build_id}"

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.sessions.begin() as session:
            yield session

    @asynccontextmanager
    async def as_caller(self, access: Access) -> AsyncIterator[tuple[AsyncSession, accounts.Principal]]:
        """A transaction on behalf of the holder of an API token: 401 if it is unknown, revoked or expired,
        403 if it lacks the role the route needs (checked before the handler does anything).

        The request's first transaction takes what its dependency (api/deps.py) left: with `needs_now`, the
        dependency's own transaction, still open, whose check is this one's (committed here when the block ends);
        with `needs`, the proof of a check made just before in a transaction of its own, instead of reading the
        token again: a revocation committed in between lets this one call through (it began before), never the
        next."""
        if access.opened:
            opened = access.opened.pop()
            try:
                yield opened.session, opened.principal
            except BaseException:
                await opened.session.rollback()
                raise
            await opened.session.commit()
            return
        async with self.sessions.begin() as session:
            if access.proof:
                principal = access.proof.pop()
            else:
                principal = await self._check(session, access)
            yield session, principal

    @asynccontextmanager
    async def open_as_caller(self, access: Access) -> AsyncIterator[Opened]:
        """A transaction whose caller is checked (as `as_caller`), left open for a later `as_caller` to take and
        commit; rolled back when this block ends if nothing took it."""
        async with self.sessions() as session:  # closing the session rolls back a transaction still open
            yield Opened(session, await self._check(session, access))

    @staticmethod
    async def _check(session: AsyncSession, access: Access) -> accounts.Principal:
        principal = await accounts.authenticate(session, access.token, access.address)
        accounts.require(principal, access.role, scoped=access.scoped)
        if access.superuser:
            accounts.require_superuser(principal)
        return principal


@dataclass(frozen=True)
class Opened:
    """A transaction begun on behalf of a checked caller (`Services.open_as_caller`)."""

    session: AsyncSession
    principal: accounts.Principal
