"""`OneWriteProtocol` (the control plane's uvicorn protocol) holds a response's head until its body's first write:
answers stay whole and in order, and a streamed answer's head is not kept waiting for a body that comes later."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from outpost.server.httpwrites import OneWriteProtocol

LATER = 1.0  # seconds the streamed answer waits before its body


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/small":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/later":  # a head now, its body a second later (a log follow, an event stream)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(LATER)
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b" words"})
    elif path == "/big":
        body = b"x" * (4 << 20)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def url() -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_app, http=OneWriteProtocol, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_answers_stay_whole_and_in_order_on_one_connection(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(50):  # keep-alive: each answer's head and body, then the next's
            small, empty = await client.get("/small"), await client.get("/empty")
            assert (small.status_code, small.content) == (200, b"hello")
            assert (empty.status_code, empty.content) == (204, b"")
        big = await client.get("/big")
        assert len(big.content) == 4 << 20
        assert (await client.head("/small")).status_code == 200


async def test_a_streamed_answer_s_head_is_not_held_until_its_body(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        began = time.monotonic()
        async with client.stream("GET", "/later") as response:
            head_after = time.monotonic() - began
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert response.status_code == 200
    assert body == b"late words"
    assert head_after < LATER / 2, head_after  # the head came at once, not with the body a second later
