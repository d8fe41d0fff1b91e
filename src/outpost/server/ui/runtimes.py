"""Runtimes and their runners: who is online, what they run; new runtimes and install tokens."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.api.schemas.runtimes import RuntimeIn
from outpost.server.models import Build, Runner, Runtime
from outpost.server.security import now
from outpost.server.services import Services
from outpost.server.store import audit, builds, runtimes
from outpost.server.store.accounts import ADMIN, Principal, require
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.sessions import Viewer, as_viewer, check_csrf, checked, read_form, services

router = APIRouter(route_class=UiRoute, include_in_schema=False)


@dataclass
class RunnerView:
    runner: Runner
    online: bool
    builds: list[Build]  # what it holds now, oldest first

    @property
    def drain(self) -> str:
        return runtimes.drain_state(self.runner, len(self.builds))


@dataclass
class RuntimeView:
    runtime: Runtime
    runners: list[RunnerView]


def online(svc: Services, runner: Runner) -> bool:
    """The API's rule (`outpost runners list`): seen within a poll, a heartbeat and some slack."""
    horizon = now() - (svc.settings.poll_timeout + svc.settings.heartbeat_interval + 5)
    return bool(runner.last_seen_at and runner.last_seen_at > horizon)


async def idle_runtimes(svc: Services, session: AsyncSession, who: Principal) -> set[str]:
    """Names of the account's runtimes with no runner online that takes builds (not drained): a build there waits
    until one connects or is undrained."""
    busy = {r.runtime_id for r in await runtimes.list_runners(session, who) if online(svc, r) and not r.drained_at}
    return {rt.name for rt in await runtimes.list_runtimes(session, who) if rt.id not in busy}


async def _page(request: Request, *, created: Runtime | None = None, token: str = "", error: str = "") -> Response:
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        everyone = await runtimes.list_runners(session, viewer.principal)
        held = await runtimes.held_builds(session, viewer.principal)
        views = [
            RuntimeView(
                rt,
                [RunnerView(r, online(svc, r), held.get(r.id, [])) for r in everyone if r.runtime_id == rt.id],
            )
            for rt in await runtimes.list_runtimes(session, viewer.principal)
        ]
    return _render(request, viewer, views, created=created, token=token, error=error)


def _render(
    request: Request, viewer: Viewer, views: list[RuntimeView], *, created: Runtime | None, token: str, error: str
) -> Response:
    svc = services(request)
    command = f"outpost runner start --url {svc.public_url} --token {token}" if token else ""
    return page(
        request,
        "runtimes.html",
        viewer,
        status_code=422 if error else 201 if token else 200,
        runtimes=views,
        created=created,
        token=token,
        command=command,
        error=error,
    )


@router.get("/runtimes")
async def runtime_list(request: Request) -> Response:
    return await _page(request)


@router.post("/new/runtime")
async def create_runtime(request: Request) -> Response:
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        body = checked(RuntimeIn, name=form.get("name").strip())
        runtime = await runtimes.create_runtime(session, viewer.principal, body.name)
        token = await runtimes.create_install_token(session, runtime)
    return await _page(request, created=runtime, token=token)


@router.post("/runners/{runner_id}/revoke")
async def revoke_runner(request: Request, runner_id: str) -> Response:
    """As `DELETE /api/v1/runners/{id}`: its token is void at once and the builds it held are handed back."""
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        runner = await runtimes.revoke_runner(session, viewer.principal, runner_id)
        changed = await builds.end_leases_of(session, runner)
    svc.wakeups.runner(runner.id)  # its open poll answers 401
    for build in changed:
        svc.wakeups.build_changed(build)
    return see_other("/runtimes")


@router.post("/runners/{runner_id}/drain")
async def drain_runner(request: Request, runner_id: str) -> Response:
    """As `POST /api/v1/runners/{id}/drain`: it finishes what it runs and is handed no new build."""
    return await _set_drained(request, runner_id, drained=True)


@router.post("/runners/{runner_id}/undrain")
async def undrain_runner(request: Request, runner_id: str) -> Response:
    return await _set_drained(request, runner_id, drained=False)


async def _set_drained(request: Request, runner_id: str, *, drained: bool) -> Response:
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        runner = await runtimes.drain_runner(session, viewer.principal, runner_id, drained=drained)
    svc.wakeups.runner(runner.id)  # its held polls look again, and wait for builds no more (or again)
    if not drained:
        svc.wakeups.work(runner.runtime_id)
    return see_other(f"/runtimes#runner-{runner.id}")


@router.post("/runtimes/{name}/install-token")
async def install_token(request: Request, name: str) -> Response:
    """A one-time token, shown on this answer only (not behind a redirect, so a reload does not make another)."""
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        runtime = await runtimes.get_runtime(session, viewer.principal, name)
        token = await runtimes.create_install_token(session, runtime)
        await audit.record(session, viewer.principal, "install_token.create", runtime.name)
    return await _page(request, created=runtime, token=token)
