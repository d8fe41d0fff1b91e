"""The control plane's ASGI application."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from outpost import __version__
from outpost.server import cron, db, presence
from outpost.server.api import (
    accounts,
    approvals,
    artifacts,
    audit,
    builds,
    errors,
    gitqueries,
    health,
    integrations,
    logs,
    metrics,
    pipelines,
    runner,
    runtimes,
    testreports,
    triggers,
    users,
    webhooks,
)
from outpost.server.dispatch import Availability, Wakeups, reap_leases, runtime_key
from outpost.server.guards import SMALL_BODIES, BodyLimit, RateLimit, RefuseNul, limits_of
from outpost.server.metrics import Observe, ServerMetrics
from outpost.server.replicas import ReplicaLink, asyncpg_dsn
from outpost.server.secrets import SecretBox
from outpost.server.services import Services
from outpost.server.store import deliveries as store_deliveries
from outpost.server.store import limits as store_limits
from outpost.server.store import schedules
from outpost.server.ui import install as install_ui
from outpost.server.ui.lockout import LoginLockout, SharedLoginLockout
from outpost.settings import ServerSettings

log = logging.getLogger("outpost.server")
SHUTDOWN_GRACE = 10.0  # seconds background tasks get to stop when the control plane shuts down


def create_app(
    settings: ServerSettings,
    *,
    public_url: str | None = None,
    on_start: Callable[[Services], Awaitable[None]] | None = None,
) -> FastAPI:
    """`on_start` runs once the database is ready and before the server listens (the first start-up's
    bootstrap: nobody gets an answer from a control plane that has not written its admin token yet)."""
    observed = ServerMetrics()

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
            availability=Availability(tolerance=max(1.0, settings.lease_ttl / 10)),
            metrics=observed,
        )
        observed.services = services
        services.wakeups.observers.append(observed.build_changed)
        app.state.services = services
        if on_start is not None:
            await on_start(services)
        background: set[asyncio.Task[None]] = set()
        if db.is_postgres(engine):  # other replicas may share the database: wake-ups and jobs go through a link
            link = services.replicas = ReplicaLink(
                asyncpg_dsn(settings.database_url), services.wakeups, services.availability
            )
            # A minute whose leader died before firing it still fires (the store fires a minute once).
            link.on_lead.append(lambda: services.spawn(fire_cron(services, cron.minute_of(time.time()))))
            background.add(asyncio.create_task(link.run(), name="replica link"))
        # No fresh TTL for live leases after a restart: the reaper's availability starts with this process.
        reaper = asyncio.create_task(
            reap_leases(
                services.sessions,
                services.wakeups,
                services.availability,
                interval=min(1.0, settings.lease_ttl / 4),
                lease_ttl=settings.lease_ttl,
                max_requeues=settings.max_requeues,
                leads=services.leads,
            )
        )
        scheduler = asyncio.create_task(cron.run_scheduler(lambda minute: fire_cron(services, minute)))
        background.add(asyncio.create_task(presence.record(services.presence, services.sessions), name="presence"))
        try:
            yield
        finally:
            await services.stop_background()
            background |= {scheduler, reaper}
            for task in background:
                task.cancel()
            # Bounded: a task stuck in a database call must not keep the process from stopping.
            _, stuck = await asyncio.wait(background, timeout=SHUTDOWN_GRACE)
            for task in stuck:
                log.warning("a background task did not stop within %ss: %s", SHUTDOWN_GRACE, task.get_name())
            try:  # the runners heard from since the last round
                async with asyncio.timeout(SHUTDOWN_GRACE):
                    await services.presence.flush(services.sessions)
            except Exception:
                log.exception("writing when runners were last seen failed on the way out")
            if services.replicas is not None:
                await services.replicas.close()  # after the jobs stopped: a leader hands over
            await engine.dispose()

    app = FastAPI(title="Outpost CI", version=__version__, lifespan=lifespan)
    errors.install(app)
    for public in (health, accounts, runtimes, pipelines, builds, approvals, logs):
        app.include_router(public.router)
    app.include_router(runner.router)
    for outputs in (artifacts, testreports):  # what steps leave: uploaded by runners, read by users
        app.include_router(outputs.runner_router)
        app.include_router(outputs.router)
    app.include_router(triggers.router)
    app.include_router(webhooks.router)
    app.include_router(integrations.router)
    app.include_router(gitqueries.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(metrics.router)
    install_ui(app)  # the web UI: pages at /, live updates under /ui/events, files under /ui/static
    _try_first(app, runner.router, builds.router)
    # Replicas share one PostgreSQL: they count rate limits and failed logins there, together.
    shared = settings.database_url.startswith("postgresql")
    lockout = SharedLoginLockout.for_app(app.state, settings) if shared else LoginLockout.from_settings(settings)
    app.state.login_lockout = lockout  # read by the login form
    app.add_middleware(RefuseNul, own_parsing=(webhooks.PREFIX,))
    # Limits what RefuseNul reads.
    bodies = {webhooks.PREFIX: webhooks.MAX_BODY, artifacts.UPLOADS: settings.max_artifact_bytes, **SMALL_BODIES}
    app.add_middleware(BodyLimit, limit=settings.max_request_body, by_prefix=bodies)
    # Outermost: a client over its allowance costs nothing more.
    app.add_middleware(RateLimit, limits=limits_of(settings), shared=shared)
    app.add_middleware(Observe, metrics=observed)  # around everything, refusals included: a count costs nothing
    return app


def _try_first(app: FastAPI, *routers: APIRouter) -> None:
    """Puts these routers' routes first in the order FastAPI tries them for a request. The runner protocol's and
    the build routes are most of the control plane's requests, and FastAPI tries each included router in turn: a
    poll tried eleven others before its own, ~0.1 ms of CPU a request, a tenth of a poll's. No path of theirs is
    also another route's (tests/server/test_routes.py checks), so the order changes which route answers nothing."""
    chosen = [r for router in routers for r in app.router.routes if getattr(r, "original_router", None) is router]
    app.router.routes[:] = chosen + [r for r in app.router.routes if r not in chosen]


async def fire_cron(services: Services, minute: float) -> None:
    """One tick of the cron scheduler: start the builds due this minute, then wake their runners. Only the
    replica that leads the background jobs fires (the store would fire a minute once anyway)."""
    if not services.leads():
        return
    async with services.tx() as session:
        started = await schedules.fire_cron(session, minute)
    for build in started:
        log.info("cron trigger %s started build %s", build.trigger_id, build.id)
        services.wakeups.notify(runtime_key(build.runtime_id))
    await artifacts.remove_expired(services)  # kept OUTPOST_ARTIFACT_DAYS, then gone with their files
    async with services.tx() as session:  # kept OUTPOST_DELIVERY_DAYS
        removed = await store_deliveries.remove_old(session, services.settings.delivery_days)
    if removed:
        log.info("removed %d webhook deliveries older than %g days", removed, services.settings.delivery_days)
    if db.is_postgres(services.engine):  # only there are they rows (else in memory: guards.py, lockout.py)
        settings, now = services.settings, time.time()
        async with services.tx() as session:  # allowances full again, failures that would start over
            await store_limits.forget_idle(session, now - settings.rate_window, now - 2 * settings.login_max_delay)
