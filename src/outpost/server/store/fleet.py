"""The installation at a glance, for /metrics: every runtime's queued and held builds and its online runners.

Two grouped queries, each cheap however many finished builds the table holds: builds are looked up per
runtime through the dispatch index (runtime_id, status, ...), and only live statuses are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.models import Account, Build, Runner, Runtime

LIVE = ("queued", "claimed", "running")


@dataclass
class RuntimeCounts:
    account: str
    runtime: str
    queued: int = 0
    running: int = 0  # claimed by a runner or running on it
    runners_online: int = 0


async def runtime_counts(session: AsyncSession, online_since: float) -> list[RuntimeCounts]:
    """One row per runtime of every account; runners count as online if seen since `online_since`."""
    counts: dict[str, RuntimeCounts] = {}
    rows = await session.execute(
        select(Runtime.id, Account.name, Runtime.name, Build.status, func.count(Build.id))
        .select_from(Runtime)
        .join(Account, Account.id == Runtime.account_id)
        .outerjoin(Build, and_(Build.runtime_id == Runtime.id, Build.status.in_(LIVE)))
        .group_by(Runtime.id, Account.name, Runtime.name, Build.status)
    )
    for runtime_id, account, runtime, status, count in rows:
        row = counts.setdefault(runtime_id, RuntimeCounts(account, runtime))
        if status == "queued":
            row.queued += count
        elif status is not None:
            row.running += count
    online = await session.execute(
        select(Runner.runtime_id, func.count(Runner.id))
        .where(Runner.revoked_at.is_(None), Runner.last_seen_at > online_since)
        .group_by(Runner.runtime_id)
    )
    for runtime_id, count in online:
        if runtime_id in counts:
            counts[runtime_id].runners_online = count
    return sorted(counts.values(), key=lambda c: (c.account, c.runtime))
