"""Step logs: offset-addressed, idempotent appends, and reads for followers.

A step's log is the concatenation of its chunks in offset order. An append names the offset it
starts at: a range already held is a no-op, an overlap keeps only the new tail, and a gap is
refused with the offset the control plane expects next.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import StoreError
from outpost.server.models import Build, LogChunk, Step
from outpost.server.store.builds import Held, require_live, step_for


class OffsetGap(StoreError):
    status_code = 416


async def append(session: AsyncSession, held: Held, stream: str, offset: int, data: bytes) -> tuple[int, bool]:
    """Returns the step's log size afterwards and whether anything new was stored."""
    require_live(held)
    step = await step_for(session, held.build, stream)
    size = step.log_size
    if offset > size:
        raise OffsetGap(
            f"log offset {offset} leaves a gap: this step's log holds {size} bytes",
            error="offset_gap",
            expected_offset=size,
            stream=stream,
        )
    fresh = data[size - offset :]
    if not fresh:
        return size, False
    session.add(LogChunk(build_id=held.build.id, step_id=step.id, offset=size, data=fresh))
    step.log_size = size + len(fresh)
    await session.flush()
    return step.log_size, True


async def read_step_log(session: AsyncSession, step: Step) -> bytes:
    rows = await session.scalars(select(LogChunk.data).where(LogChunk.step_id == step.id).order_by(LogChunk.offset))
    return b"".join(rows)


@dataclass
class Piece:
    cursor: int
    step: str
    offset: int
    data: bytes


async def read_after(session: AsyncSession, build: Build, cursor: int, max_bytes: int) -> list[Piece]:
    """Chunks of every step of the build accepted after `cursor`, in the order they were accepted."""
    rows = await session.execute(
        select(LogChunk.id, Step.name, LogChunk.offset, LogChunk.data)
        .join(Step, Step.id == LogChunk.step_id)
        .where(LogChunk.build_id == build.id, LogChunk.id > cursor)
        .order_by(LogChunk.id)
        .limit(1000)
    )
    pieces: list[Piece] = []
    total = 0
    for chunk_id, name, offset, data in rows:
        if pieces and total + len(data) > max_bytes:
            break
        pieces.append(Piece(chunk_id, name, offset, data))
        total += len(data)
    return pieces
