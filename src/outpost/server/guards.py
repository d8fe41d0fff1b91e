"""ASGI guards: requests no handler should ever see are answered here with a 4xx: bodies too large, text no
database can store, JSON nested too deep, and clients over a route's rate limit."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost.server import jsonbodies
from outpost.server.api.schemas.errors import error_body
from outpost.server.store import limits as store_limits
from outpost.settings import ServerSettings
from outpost.wire import PREFIX, REPORT_CONTENT_TYPE


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


# Routes that take a few short fields (a password, a token's name) have no use for megabytes.
SMALL_BODIES = {"/login": 16 * 1024, "/api/v1/tokens": 64 * 1024, PREFIX + "/register": 64 * 1024}


class BodyLimit:
    """Refuses request bodies above a limit with 413, before any handler reads them. `by_prefix` gives paths
    under a prefix another limit (webhook payloads may be larger than anything a user sends; a login form or a
    token request much smaller: SMALL_BODIES)."""

    def __init__(self, app: ASGIApp, limit: int, by_prefix: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.by_prefix = by_prefix or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = next((n for prefix, n in self.by_prefix.items() if path.startswith(prefix)), self.limit)
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
    even be written back out as UTF-8), and no name or setting of ours needs them.

    Also refuses, with 400, a JSON body nested deeper than `jsonbodies.MAX_DEPTH` before the framework parses
    it (its parser recurses per level). Paths under `own_parsing` read their bodies with `jsonbodies`
    themselves (a webhook records the refusal as a rejected delivery)."""

    def __init__(self, app: ASGIApp, own_parsing: tuple[str, ...] = ()) -> None:
        self.app = app
        self.own_parsing = own_parsing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            await _refuse(send, 400, "invalid_request", "NUL characters are not allowed in URLs")
            return
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"")
        # Log appends, and reports whose log bytes travel raw (their route checks the JSON head itself).
        raw_bytes = kind.startswith((b"application/octet-stream", REPORT_CONTENT_TYPE.encode()))
        if raw_bytes or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        parsed_here = not str(scope["path"]).startswith(self.own_parsing)
        if parsed_here and (not kind or b"json" in kind) and (reason := jsonbodies.too_deep(body)):
            await _refuse(send, 400, "invalid_request", reason)
            return
        if unstorable(body):
            message = "NUL characters and unpaired surrogates are not allowed in request bodies"
            await _refuse(send, 422, "invalid_request", message)
            return
        await self.app(scope, _replaying(body, receive), send)


def unstorable(body: bytes) -> bool:
    """Whether a JSON body holds a NUL or a lone surrogate in any string (both can only arrive as \\u escapes)."""
    if b"\\u" not in body:
        return False
    try:
        value = jsonbodies.loads(body)
    except jsonbodies.NotJson:
        return False  # not JSON after all (or too deep for this check): the handler answers

    def walk(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" in v or any("\ud800" <= c <= "\udfff" for c in v)
        if isinstance(v, list):
            return any(walk(x) for x in v)
        if isinstance(v, dict):
            return any(walk(k) or walk(x) for k, x in v.items())
        return False

    return walk(value)


# --- rate limits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """At most `count` requests per `window` seconds from one client address to the routes `path` matches."""

    name: str  # what is limited, as the 429 says it
    method: str
    path: re.Pattern[str]
    count: int
    window: float


def limits_of(settings: ServerSettings) -> list[Limit]:
    """The rate-limited routes: the ones that create credentials, check passwords or take unauthenticated work."""
    window = settings.rate_window
    found = [
        Limit("login", "POST", re.compile(r"/login$"), settings.rate_login, window),
        Limit("token", "POST", re.compile(r"/api/v1/tokens$"), settings.rate_tokens, window),
        Limit("token", "POST", re.compile(r"(/api/v1)?/runtimes/[^/]+/install-tokens?$"), settings.rate_tokens, window),
        Limit("webhook", "POST", re.compile(r"/webhooks/"), settings.rate_webhooks, window),
        Limit("registration", "POST", re.compile(re.escape(PREFIX) + r"/register$"), settings.rate_register, window),
    ]
    return [limit for limit in found if limit.count > 0]


class Allowances:
    """Token buckets by key: each holds up to `count` requests and refills at `count / window` per second, so a
    client that stops for a window has its whole allowance back. In memory: each server process counts alone
    (on SQLite, where there is one; on PostgreSQL the buckets are rows shared by the replicas: `shared=True`)."""

    MAX_KEYS = 100_000  # beyond this many clients, full buckets are forgotten first (they hold nothing)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: tuple[str, str], count: int, window: float) -> float:
        """Takes one request from `key`'s bucket: 0.0 if allowed, else the seconds until one is."""
        now = self.clock()
        rate = count / window
        tokens, when = self._buckets.get(key, (float(count), now))
        tokens = min(float(count), tokens + (now - when) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_KEYS:
            self._forget_full(now, window)
        return 0.0

    def _forget_full(self, now: float, window: float) -> None:
        full = [k for k, (_, when) in self._buckets.items() if now - when >= window]  # refilled by now
        for key in full or list(self._buckets)[: len(self._buckets) // 10]:  # else the oldest tenth
            del self._buckets[key]


class RateLimit:
    """Answers 429 with Retry-After and a reason once a client address has used up a route's allowance. With
    `shared`, the allowances are rows in the database (store/limits.py, one statement a limited request), so
    replicas on one PostgreSQL count a client together; else this process's memory keeps them."""

    def __init__(
        self, app: ASGIApp, limits: list[Limit], allowances: Allowances | None = None, shared: bool = False
    ) -> None:
        self.app = app
        self.limits = limits
        self.allowances = allowances or Allowances()
        self.shared = shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            limit = next((x for x in self.limits if scope["method"] == x.method and x.path.match(path)), None)
            if limit is not None:
                address = client_address(scope)
                if self.shared:
                    async with scope["app"].state.services.tx() as session:
                        wait = await store_limits.take(
                            session, limit.name, address, limit.count, limit.window, time.time()
                        )
                else:
                    wait = self.allowances.take((limit.name, address), limit.count, limit.window)
                if wait > 0:
                    await too_many(send, f"too many {limit.name} requests from {address}", wait)
                    return
        await self.app(scope, receive, send)


def client_address(scope: Scope) -> str:
    """The client's address as the server sees it (uvicorn puts a trusted proxy's X-Forwarded-For there)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def too_many(send: Send, why: str, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    body = json.dumps(error_body("rate_limited", f"{why}; try again in {seconds} s", retry_after=seconds)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(seconds).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
