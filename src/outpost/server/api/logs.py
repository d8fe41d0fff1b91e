"""A build's log: followed by cursor, held as a long poll (/api/v1/builds/{id}/log), and one step's whole log
as text."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from outpost.server.api.deps import ScopedViewer, Svc
from outpost.server.api.schemas.logs import LogPage, LogPiece
from outpost.server.dispatch import build_key, hang_up
from outpost.server.store import builds, logs
from outpost.wire import FINAL_BUILD_STATUSES

router = APIRouter(prefix="/api/v1", tags=["api"])
MAX_PAGE_BYTES = 1024 * 1024
STREAM_PAGE_BYTES = 4 * 1024 * 1024  # read from the store per transaction by a streamed step log


@router.get("/builds/{build_id}/log")
async def follow_log(
    build_id: str,
    request: Request,
    token: ScopedViewer,
    svc: Svc,
    after: Annotated[int, Query(ge=0)] = 0,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> LogPage:
    """Log pieces of every step accepted after the cursor; with `wait`, held until there are some
    (or the client hangs up, or the server stops). `finished`: the build has ended and this page holds the last
    of its log, so the follower need not ask again (the last page of a short build is also its first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with hang_up(request.receive) as gone:
        while True:
            ticket = svc.wakeups.ticket(build_key(build_id))
            async with svc.as_caller(token) as (session, who):
                build = await builds.get_build(session, who, build_id)
                pieces, rest, listed_status = await logs.read_page(session, build, after, MAX_PAGE_BYTES)
            # The status was read first: chunks stored with or before the finish are all seen by the read after it.
            # The status read with the chunks is as new as they are (a finish committed in between included).
            status = listed_status or build.status
            finished = status in FINAL_BUILD_STATUSES and not rest
            remaining = deadline - loop.time()
            if pieces or finished or remaining <= 0 or gone.done() or svc.wakeups.closing:
                return LogPage(
                    build=build.id,
                    status=status,
                    finished=finished,
                    cursor=pieces[-1].cursor if pieces else after,
                    pieces=[
                        LogPiece(cursor=p.cursor, step=p.step, offset=p.offset, data=base64.b64encode(p.data).decode())
                        for p in pieces
                    ],
                )
            await svc.wakeups.wait(ticket, min(remaining, 2.0), unless=gone)


@router.get("/builds/{build_id}/steps/{step}/log")
async def step_log(build_id: str, step: str, token: ScopedViewer, svc: Svc) -> Response:
    """One step's whole log as text, streamed page by page (each page its own short transaction), so the
    server's memory stays flat whatever the log's size. The size is fixed when the read starts: bytes
    appended meanwhile are for the follower (`/log`), and Content-Length always matches the body."""
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        row = await builds.find_step(session, build, step)
        step_id, size = row.id, row.log_size

    async def pages() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            async with svc.tx() as session:
                page = await logs.read_step_page(session, step_id, sent, STREAM_PAGE_BYTES)
            if not page:
                return
            for data in page:
                data = data[: size - sent]
                sent += len(data)
                yield data

    return StreamingResponse(pages(), media_type="text/plain; charset=utf-8", headers={"Content-Length": str(size)})
