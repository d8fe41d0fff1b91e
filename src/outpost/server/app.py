"""The control plane's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost import __version__
from outpost.server import db
from outpost.server.api import errors, public, runner
from outpost.server.api.schemas import error_body
from outpost.server.dispatch import Wakeups, reap_leases
from outpost.server.secrets import SecretBox
from outpost.server.services import Services
from outpost.server.store import builds
from outpost.settings import ServerSettings

log = logging.getLogger("outpost.server")


def create_app(settings: ServerSettings, *, public_url: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.make_engine(settings.database_url)
        await db.migrate(engine)
        services = Services(
            settings=settings,
            engine=engine,
            sessions=db.make_sessions(engine),
            wakeups=Wakeups(),
            public_url=(public_url or settings.public_url or "http://127.0.0.1:8080").rstrip("/"),
            secrets=SecretBox.from_settings(settings.secret_key, settings.data_dir),
        )
        async with services.tx() as session:
            extended = await builds.extend_live_leases(session, settings.lease_ttl)
        if extended:
            log.info("gave %d live lease(s) a fresh TTL after start-up", extended)
        app.state.services = services
        reaper = asyncio.create_task(
            reap_leases(
                services.sessions,
                services.wakeups,
                interval=min(1.0, settings.lease_ttl / 4),
                max_requeues=settings.max_requeues,
            )
        )
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await engine.dispose()

    app = FastAPI(title="Outpost CI", version=__version__, lifespan=lifespan)
    errors.install(app)
    app.include_router(public.router)
    app.include_router(runner.router)
    app.add_middleware(BodyLimit, limit=settings.max_request_body)
    return app


class BodyLimit:
    """Refuses request bodies above a limit with 413, before any handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        if declared or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): buffer up to the limit, then replay the body to the app.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _too_large(send, self.limit)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(error_body("too_large", f"request bodies may hold at most {limit} bytes")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
