"""The control plane's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from outpost import __version__
from outpost.server import db
from outpost.server.api import errors, public, runner
from outpost.server.dispatch import Wakeups, reap_leases
from outpost.server.guards import BodyLimit, RefuseNul
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
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit, limit=settings.max_request_body)  # outermost: limits what RefuseNul reads
    return app
