"""ASGI guards: requests no handler should ever see are answered here with a 4xx."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost.server.api.schemas import error_body


async def _refuse(send: Send, status: int, error: str, message: str) -> None:
    body = json.dumps(error_body(error, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole body, or None if the client left or it grew past `limit`."""
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if limit is not None and len(body) > limit:
            return None
    return bytes(body)


def _replaying(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class BodyLimit:
    """Refuses request bodies above a limit with 413, before any handler reads them. `wider` gives paths
    under a prefix another limit (webhook payloads may be larger than anything a user sends)."""

    def __init__(self, app: ASGIApp, limit: int, wider: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.wider = wider or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = next((n for prefix, n in self.wider.items() if path.startswith(prefix)), self.limit)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        if declared or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): buffer up to the limit, then replay the body to the app.
        body = await _read_body(receive, limit)
        if body is None:
            await _too_large(send, limit)
            return
        await self.app(scope, _replaying(body, receive), send)


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, "too_large", f"request bodies may hold at most {limit} bytes")


class RefuseNul:
    """Refuses NUL characters in paths, query strings and JSON bodies, and lone UTF-16 surrogates in
    JSON bodies: no text column can hold them (PostgreSQL refuses NUL outright, and a surrogate cannot
    even be written back out as UTF-8), and no name or setting of ours needs them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            await _refuse(send, 400, "invalid_request", "NUL characters are not allowed in URLs")
            return
        headers = dict(scope["headers"])
        raw_bytes = headers.get(b"content-type", b"").startswith(b"application/octet-stream")  # log appends
        if raw_bytes or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        if b"\\u" in body and _unstorable(body):  # both can only arrive as \\u escapes
            message = "NUL characters and unpaired surrogates are not allowed in request bodies"
            await _refuse(send, 422, "invalid_request", message)
            return
        await self.app(scope, _replaying(body, receive), send)


def _unstorable(body: bytes) -> bool:
    try:
        value = json.loads(body)
    except ValueError:
        return False  # not JSON after all: the handler answers 422

    def walk(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" in v or any("\ud800" <= c <= "\udfff" for c in v)
        if isinstance(v, list):
            return any(walk(x) for x in v)
        if isinstance(v, dict):
            return any(walk(k) or walk(x) for k, x in v.items())
        return False

    return walk(value)
