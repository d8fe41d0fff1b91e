"""Step logs: offset-addressed, idempotent appends, and reads for followers.

A step's log is the concatenation of its chunks in offset order. An append names the offset it
starts at: a range already held is a no-op, an overlap keeps only the new tail, and a gap is
refused with the offset the control plane expects next.

Late appends come from the runner whose lease expired, with what it printed before it stopped: the
same rules, and a line in the build's own stream for every piece that arrived late.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import StoreError
from outpost.server.models import Build, LogChunk, Step
from outpost.server.store.builds import Held, find_step, require_expired_holder, require_live, step_for
from outpost.wire import SYSTEM_STREAM


class OffsetGap(StoreError):
    status_code = 416


async def append(session: AsyncSession, held: Held, stream: str, offset: int, data: bytes) -> tuple[int, bool]:
    """Returns the step's log size afterwards and whether anything new was stored."""
    require_live(held)
    await one_writer(session, held.build)
    size, fresh = await _store(session, held.build, await step_for(session, held.build, stream), offset, data)
    return size, fresh > 0


async def append_late(session: AsyncSession, held: Held, appends: list[tuple[str, int, bytes]]) -> dict[str, int]:
    """Log bytes from the holder of the build's expired lease, appended by the usual rules; each new
    piece is marked in the build's own stream, after the runner's own lines of that stream in this
    call. Statuses never change. Returns the size of every stream named, and of the build's stream."""
    require_expired_holder(held)
    build = held.build
    await one_writer(session, build)
    sizes: dict[str, int] = {}
    marks: list[str] = []
    for stream, offset, data in appends:
        # A finished build gets no new steps: a late piece names one the build already has.
        step = await (step_for if stream == SYSTEM_STREAM else find_step)(session, build, stream)
        sizes[stream], fresh = await _store(session, build, step, offset, data)
        if fresh:
            what = "the build's own log" if stream == SYSTEM_STREAM else f"the log of step {stream}"
            marks.append(f"[outpost] {fresh} bytes of {what} arrived after the lease expired\n")
    if marks:
        system = await step_for(session, build, SYSTEM_STREAM)
        sizes[SYSTEM_STREAM], _ = await _store(session, build, system, system.log_size, "".join(marks).encode())
    elif SYSTEM_STREAM not in sizes:  # nothing new: say where the build's stream ends, creating nothing
        held_size = await session.scalar(
            select(Step.log_size).where(Step.build_id == build.id, Step.name == SYSTEM_STREAM)
        )
        sizes[SYSTEM_STREAM] = held_size or 0
    return sizes


async def one_writer(session: AsyncSession, build: Build) -> None:
    """Appends to one build take turns until they commit (a transaction advisory lock on PostgreSQL; SQLite has
    one writer anyway). So chunk ids, the followers' cursor, are handed out in commit order within a build: two
    replicas appending to two of its steps at once could otherwise commit a later id first, and a follower that
    read in between would move its cursor past the earlier one. Taken before the step's size is read, it also
    keeps two appends to one step from both writing at the same offset."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_WRITER_LOCK, {"key": _lock_key(build.id)})


def one_writer_of(conn: Connection, build_id: str) -> None:
    """`one_writer` on a synchronous connection (store/reports.py runs a report's statements in one pass)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_WRITER_LOCK, {"key": _lock_key(build_id)})


_WRITER_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def _lock_key(build_id: str) -> int:
    return int(hashlib.sha256(build_id.encode()).hexdigest()[:15], 16)


async def _store(session: AsyncSession, build: Build, step: Step, offset: int, data: bytes) -> tuple[int, int]:
    """Appends by the offset rules; returns the log's size afterwards and how many bytes were new."""
    size = step.log_size
    fresh = fresh_part(step.name, size, offset, data)
    if not fresh:
        return size, 0
    session.add(LogChunk(build_id=build.id, step=step, offset=size, data=fresh))  # step_id set at the flush
    step.log_size = size + len(fresh)  # written with the chunk when the transaction flushes (one UPDATE a step)
    return step.log_size, len(fresh)


def fresh_part(stream: str, size: int, offset: int, data: bytes) -> bytes:
    """The offset rules: what of `data`, sent for `offset`, is new to a log of `size` bytes (a range already held
    is a no-op, an overlap keeps only the new tail); a gap raises OffsetGap with the offset expected next."""
    if offset > size:
        raise OffsetGap(
            f"log offset {offset} leaves a gap: this step's log holds {size} bytes",
            error="offset_gap",
            expected_offset=size,
            stream=stream,
        )
    return data[size - offset :]


async def read_step_log(session: AsyncSession, step: Step) -> bytes:
    rows = await session.scalars(select(LogChunk.data).where(LogChunk.step_id == step.id).order_by(LogChunk.offset))
    return b"".join(rows)


async def read_step_page(session: AsyncSession, step_id: int, start: int, max_bytes: int) -> list[bytes]:
    """Chunks of one step's log from byte `start` on, those that start in the next `max_bytes`: the pages
    a streamed read goes through, so a 200 MB log never sits whole in the server's memory."""
    rows = await session.execute(
        select(LogChunk.offset, LogChunk.data)
        # Chunks that start inside the window: at most `max_bytes` plus one chunk is fetched, whatever their sizes.
        .where(LogChunk.step_id == step_id, LogChunk.offset >= start, LogChunk.offset < start + max_bytes)
        .order_by(LogChunk.offset)
    )
    page: list[bytes] = []
    total = 0
    for offset, data in rows:
        if offset != start + total:  # chunks never overlap or leave gaps (see _store); stop at anything else
            break
        page.append(data)
        total += len(data)
    return page


@dataclass
class Piece:
    cursor: int
    step: str
    offset: int
    data: bytes


async def read_after(session: AsyncSession, build: Build, cursor: int, max_bytes: int) -> list[Piece]:
    """Chunks of every step of the build accepted after `cursor`, in the order they were accepted: as many as fit
    in `max_bytes`, and always at least one (see `read_page`)."""
    pieces, _rest, _status = await read_page(session, build, cursor, max_bytes)
    return pieces


SIZES_READ = 1000  # chunk sizes read at most to choose a page


async def read_page(
    session: AsyncSession, build: Build, cursor: int, max_bytes: int
) -> tuple[list[Piece], bool, str | None]:
    """`read_after`; whether chunks after the page are already stored (True) or the page holds every chunk stored
    so far (False); and the build's status as of the chunks listed (None if none were): read in the statement that
    lists them, so on PostgreSQL it is the status that went with them, not the one a caller read a moment before
    (a finishing report committed in between would leave that older than the chunks). The sizes are read first,
    so a follower far behind (at the start of a 200 MB log) reads one page of bytes, not everything after it."""
    status = select(Build.status).where(Build.id == build.id).scalar_subquery()
    sizes = (
        await session.execute(
            select(LogChunk.id, func.length(LogChunk.data), status)
            .where(LogChunk.build_id == build.id, LogChunk.id > cursor)
            .order_by(LogChunk.id)
            .limit(SIZES_READ)
        )
    ).all()
    listed_status = str(sizes[0][2]) if sizes else None
    ids: list[int] = []
    total = 0
    for chunk_id, size, _ in sizes:
        if ids and total + size > max_bytes:
            break
        ids.append(chunk_id)
        total += size
    rest = len(ids) < len(sizes) or len(sizes) == SIZES_READ
    if not ids:
        return [], rest, listed_status
    rows = await session.execute(
        select(LogChunk.id, Step.name, LogChunk.offset, LogChunk.data)
        .join(Step, Step.id == LogChunk.step_id)
        .where(LogChunk.build_id == build.id, LogChunk.id >= ids[0], LogChunk.id <= ids[-1])
        .order_by(LogChunk.id)
    )
    chosen = set(ids)  # the range holds no others (a build's chunk ids follow its commits), but say so exactly
    pieces = [Piece(chunk_id, name, offset, data) for chunk_id, name, offset, data in rows if chunk_id in chosen]
    return pieces, rest, listed_status
