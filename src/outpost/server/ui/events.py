"""Server-sent events for live pages: the build list, and one build (its steps and a step's log).

Each stream waits on the same wake-ups as the API's log follower (`build_key`), takes its ticket
before it reads the store so no change is missed, and re-reads now and then anyway. The build list
has no wake-up of its own (a new build wakes only its runtime), so it re-reads every LIST_EVERY
seconds as well as when a build it shows changes. A stream ends when the build has finished, the
session has ended, or the server is stopping; the browser reconnects with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from outpost.errors import StoreError
from outpost.server.dispatch import build_key
from outpost.server.store import logs
from outpost.server.ui import builds as pages
from outpost.server.ui import logview
from outpost.server.ui.rendering import FINAL, HEADERS, UiRoute, render_fragment
from outpost.server.ui.sessions import as_viewer, services
from outpost.wire import FINAL_BUILD_STATUSES

router = APIRouter(route_class=UiRoute, include_in_schema=False, prefix="/ui/events")
KEEPALIVE = 15.0
LIST_EVERY = 1.5
PIECE_BYTES = 256 * 1024
SSE_HEADERS = {**HEADERS, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(name: str, data: object, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/builds")
async def build_list(
    request: Request, asked: Annotated[pages.ListQuery, Depends(pages.list_query)]
) -> StreamingResponse:
    """`rows`: the list's table body, whenever it changes."""
    async with as_viewer(request):
        pass  # refuse before the stream starts
    svc = services(request)

    async def body() -> AsyncIterator[bytes]:
        seen = ""
        while not svc.wakeups.closing:
            try:
                async with as_viewer(request) as (session, viewer):
                    rows = await pages.build_rows(session, viewer.principal, asked)
                    names = await pages.runner_names(session, viewer.principal)
            except StoreError:
                yield event("end", {"reason": "session ended"})
                return
            tickets = [svc.wakeups.ticket(build_key(b.id)) for b in rows.builds if b.status not in FINAL_BUILD_STATUSES]
            html = render_fragment("_build_rows.html", **pages.list_context(rows, names))
            digest = _digest(html)
            if digest != seen:
                seen = digest
                yield event("rows", {"html": html})
            else:
                yield b": ping\n\n"  # also how a hung-up client is noticed
            await _any(tickets, LIST_EVERY)

    return stream(body())


async def _any(tickets: list[asyncio.Event], seconds: float) -> None:
    waits: list[asyncio.Future[object]] = [asyncio.ensure_future(t.wait()) for t in tickets]
    waits.append(asyncio.ensure_future(asyncio.sleep(seconds)))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


@router.get("/builds/{build_id}")
async def build_events(
    request: Request,
    build_id: str,
    cursor: Annotated[int, Query(ge=0)] = 0,
    step: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    line: Annotated[int, Query(ge=1)] = 1,
) -> StreamingResponse:
    """`state`: the build's header and steps (HTML) and the step a page in auto mode should show;
    `lines`: the selected step's new complete lines (HTML); `end` once the build has finished."""
    resumed = _resume(request.headers.get("last-event-id", ""))
    if resumed is not None:
        cursor, offset, line = resumed
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        await pages.build_view(svc, session, viewer.principal, build_id)  # 404 before the stream starts
    tail = logview.Tail(offset, line)

    async def body() -> AsyncIterator[bytes]:
        nonlocal cursor
        seen = ""
        while not svc.wakeups.closing:
            ticket = svc.wakeups.ticket(build_key(build_id))
            try:
                async with as_viewer(request) as (session, viewer):
                    view = await pages.build_view(svc, session, viewer.principal, build_id)
                    await pages.outputs_of(session, view)  # a step's test report or artifacts as they arrive
                    # The state sent below is the view's, so its end is judged by the view's status too.
                    pieces, rest, _ = await logs.read_page(session, view.build, cursor, PIECE_BYTES)
            except StoreError:
                yield event("end", {"reason": "session ended"})
                return
            for piece in pieces:
                cursor = piece.cursor
                if piece.step == step:
                    tail.feed(piece.offset, piece.data)
            selected = next((s for s in view.steps if s.name == step), None)
            done = view.build.status in FINAL_BUILD_STATUSES
            state = view.fragments(viewer, step)
            digest = _digest(state["header"], state["steps"], state["outputs"])
            if digest != seen:
                seen = digest
                active = view.active.name if view.active else None
                yield event("state", {**state, "status": view.build.status, "active": active})
            new = tail.lines(final=done or (selected is not None and selected.status in FINAL))
            if new is not None:
                first, html = new
                yield event("lines", {"first": first, "html": str(html)}, f"{cursor}:{tail.offset}:{tail.next_line}")
            if done and not rest:  # the build has ended and its last piece was just sent
                yield event("end", {"status": view.build.status})
                return
            if rest:
                continue  # more is stored already
            await svc.wakeups.wait(ticket, KEEPALIVE)
            if not ticket.is_set():
                yield b": keep-alive\n\n"

    return stream(body())


def _resume(last_event_id: str) -> tuple[int, int, int] | None:
    parts = last_event_id.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    cursor, offset, line = (int(p) for p in parts)
    return cursor, offset, max(1, line)
