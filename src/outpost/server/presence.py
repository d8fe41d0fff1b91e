"""When each runner was last heard from: noted in memory on every poll, written to `runners.last_seen_at` for all
the runners heard from in one transaction a second (`FLUSH_EVERY`).

A poll renewal used to write its runner's row in its own transaction: on SQLite that took the one writer's lock
that build requests wait for, 5,000 idle runners meant 167 writes a second. What reads `last_seen_at` (a runner's
"online" in the API, the UI and /metrics, the "no runner online" answer of a git query) allows a poll timeout, a
heartbeat and 5 s of slack, so a value up to a second behind changes none of those answers.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from outpost.server.models import Runner
from outpost.server.security import now
from outpost.settings import ServerSettings

log = logging.getLogger("outpost.presence")

FLUSH_EVERY = 1.0  # seconds between two writes of the runners heard from; the most `last_seen_at` lags behind

# One statement run for every runner of a batch (executemany). Never backwards: another replica may have heard
# from the runner later and written first.
_TOUCH = (
    update(Runner.__table__)  # type: ignore[arg-type]
    .where(
        Runner.__table__.c.id == bindparam("runner_id"),
        or_(Runner.__table__.c.last_seen_at.is_(None), Runner.__table__.c.last_seen_at < bindparam("seen_at")),
    )
    .values(last_seen_at=bindparam("seen_at"))
)


def online_since(settings: ServerSettings) -> float:
    """Runners seen after this are online: within a poll timeout, a heartbeat and 5 s of slack."""
    return now() - (settings.poll_timeout + settings.heartbeat_interval + 5)


class Presence:
    """The runners heard from since the last flush, and when (the latest time for each)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def seen(self, runner_id: str) -> None:
        self._seen[runner_id] = now()

    @property
    def pending(self) -> int:
        return len(self._seen)

    async def flush(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Writes what was noted since the last flush in one transaction; returns how many runners it wrote. A
        failed write keeps its batch for the next flush."""
        if not self._seen:
            return 0
        batch, self._seen = self._seen, {}
        # Sorted: every replica locks the rows in the same order, so two flushes never deadlock (PostgreSQL).
        rows = [{"runner_id": runner_id, "seen_at": at} for runner_id, at in sorted(batch.items())]
        try:
            async with sessions.begin() as session:
                connection = await session.connection()
                await connection.execute(_TOUCH, rows)
        except BaseException:
            for runner_id, at in batch.items():
                self._seen[runner_id] = max(at, self._seen.get(runner_id, at))
            raise
        return len(rows)


async def record(presence: Presence, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Forever: flush every `FLUSH_EVERY` seconds. The caller flushes once more when it stops."""
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        try:
            await presence.flush(sessions)
        except Exception:  # a database hiccup must not end the loop: the batch waits for the next round
            log.exception("writing when runners were last seen failed; retrying")
