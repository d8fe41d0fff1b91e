"""Rate-limit allowances and login failures kept in the database, so that replicas on one PostgreSQL count
together (server/guards.py and ui/lockout.py choose this store on PostgreSQL, their memory on SQLite).

Each change is one atomic statement (an upsert whose new values are computed from the row as it was), so two
replicas taking from one client's allowance at the same moment both count; no read-then-write race."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Double, Integer, Table, case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.models import LoginFailure, RateBucket

BUCKETS = cast(Table, RateBucket.__table__)
FAILURES = cast(Table, LoginFailure.__table__)


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def take(session: AsyncSession, name: str, client: str, count: int, window: float, now: float) -> float:
    """Takes one request from `client`'s allowance on `name` (at most `count` per `window` seconds, refilled
    continuously): 0.0 if allowed, else the seconds until one is."""
    rate = count / window
    at = literal(now, Double)
    elapsed = case((at > BUCKETS.c.at, at - BUCKETS.c.at), else_=literal(0.0, Double))  # a clock set back: none
    refilled = BUCKETS.c.tokens + elapsed * rate
    level = case((refilled > count, literal(float(count), Double)), else_=refilled)
    statement = _insert(session, BUCKETS).values(
        name=name, client=client, tokens=float(count) - 1.0, at=now, allowed=True
    )
    statement = statement.on_conflict_do_update(
        index_elements=[BUCKETS.c.name, BUCKETS.c.client],
        set_={"tokens": case((level >= 1.0, level - 1.0), else_=level), "at": at, "allowed": level >= 1.0},
    ).returning(BUCKETS.c.tokens, BUCKETS.c.allowed)
    tokens, allowed = (await session.execute(statement)).one()
    return 0.0 if allowed else (1.0 - tokens) / rate


async def login_wait(session: AsyncSession, address: str, username: str, now: float) -> float:
    """Seconds before `address` may try `username` again (0.0: now)."""
    found = await session.scalar(
        select(FAILURES.c.until).where(FAILURES.c.address == address, FAILURES.c.username == username)
    )
    return max(0.0, found - now) if found is not None else 0.0


async def login_failed(session: AsyncSession, address: str, username: str, now: float, quiet: float) -> int:
    """Counts one failure of the pair and returns how many there are; a pair quiet for `quiet` seconds starts
    over. The caller sets the wait with `login_hold` in the same transaction (the row is locked until then)."""
    fresh = FAILURES.c.last < literal(now - quiet, Double)
    statement = _insert(session, FAILURES).values(address=address, username=username, count=1, until=now, last=now)
    statement = statement.on_conflict_do_update(
        index_elements=[FAILURES.c.address, FAILURES.c.username],
        set_={
            "count": case((fresh, literal(1, Integer)), else_=FAILURES.c.count + 1),
            "until": case((fresh, literal(now, Double)), else_=FAILURES.c.until),
            "last": literal(now, Double),
        },
    ).returning(FAILURES.c.count)
    return int((await session.execute(statement)).scalar_one())


async def login_hold(session: AsyncSession, address: str, username: str, until: float) -> None:
    await session.execute(
        FAILURES.update().where(FAILURES.c.address == address, FAILURES.c.username == username).values(until=until)
    )


async def login_succeeded(session: AsyncSession, address: str, username: str) -> None:
    await session.execute(delete(FAILURES).where(FAILURES.c.address == address, FAILURES.c.username == username))


async def forget_idle(session: AsyncSession, buckets_before: float, failures_before: float) -> int:
    """Removes allowances untouched since `buckets_before` (full again by then) and failures untouched since
    `failures_before` (they would start over); the cron's tick calls it on the replica that leads."""
    removed = await session.execute(delete(BUCKETS).where(BUCKETS.c.at < buckets_before))
    gone = await session.execute(delete(FAILURES).where(FAILURES.c.last < failures_before))
    return int(getattr(removed, "rowcount", 0) or 0) + int(getattr(gone, "rowcount", 0) or 0)
