"""Build artifacts: the rows that say which file a step of a build uploaded, how big, and until when it is kept.
The bytes themselves are in the data folder (server/artifactfiles.py); nothing here touches them."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import NotFound, TooLarge
from outpost.server.models import Artifact, Build
from outpost.server.security import new_id, now

DAY = 86400.0


async def check_room(session: AsyncSession, build: Build, limit: int) -> None:
    """413 once the build holds `limit` artifact files (a step replacing one of its own counts no more)."""
    count = await session.scalar(select(func.count()).select_from(Artifact).where(Artifact.build_id == build.id))
    if (count or 0) >= limit:
        raise TooLarge(f"a build may keep at most {limit} artifacts", max_files=limit)


async def record(
    session: AsyncSession, build: Build, step: str, path: str, *, size: int, sha256: str, days: float
) -> tuple[Artifact, str | None]:
    """The new row of an upload, and the id of the one it replaces (the same step and path sent again), whose
    file the caller removes once this is committed."""
    old = await session.scalar(
        select(Artifact).where(Artifact.build_id == build.id, Artifact.step == step, Artifact.path == path)
    )
    replaced = None
    if old is not None:
        replaced = old.id
        await session.delete(old)
        await session.flush()
    at = now()
    row = Artifact(
        id=new_id(),
        account_id=build.account_id,
        build_id=build.id,
        step=step,
        path=path,
        size=size,
        sha256=sha256,
        created_at=at,
        expires_at=at + days * DAY,
    )
    session.add(row)
    await session.flush()
    return row, replaced


async def list_for(session: AsyncSession, build: Build) -> list[Artifact]:
    """A build's artifacts that have not expired, by step and path."""
    rows = await session.scalars(
        select(Artifact)
        .where(Artifact.build_id == build.id, Artifact.expires_at > now())
        .order_by(Artifact.created_at, Artifact.path)
    )
    return list(rows)


async def get(session: AsyncSession, build: Build, artifact_id: str) -> Artifact:
    """One artifact of a build (found in the caller's account already); 404 once expired."""
    row = await session.get(Artifact, artifact_id)
    if row is None or row.build_id != build.id or row.expires_at <= now():
        raise NotFound(f"build {build.id} has no artifact {artifact_id!r} (artifacts expire)")
    return row


async def take_expired(session: AsyncSession, *, limit: int = 500) -> list[Artifact]:
    """Removes up to `limit` expired rows and returns them, so their files can go after the commit."""
    rows = list(await session.scalars(select(Artifact).where(Artifact.expires_at <= now()).limit(limit)))
    if rows:
        await session.execute(delete(Artifact).where(Artifact.id.in_([r.id for r in rows])))
    return rows
