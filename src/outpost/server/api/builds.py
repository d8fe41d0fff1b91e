"""Builds: running a pipeline, listing, showing, cancelling and restarting its builds (/api/v1/builds)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.api.deps import AsDeveloperNow, ScopedDeveloperNow, ScopedViewerNow, Svc
from outpost.server.api.runner import handing_over
from outpost.server.api.schemas.builds import BuildIn, BuildOut, RestartIn
from outpost.server.presence import online_since
from outpost.server.services import Services
from outpost.server.store import builds, pipelines, runtimes
from outpost.server.store.accounts import Principal

router = APIRouter(prefix="/api/v1", tags=["api"])


@router.post("/pipelines/{name}/builds", status_code=201)
async def run_pipeline(name: str, body: BuildIn, token: ScopedDeveloperNow, svc: Svc) -> BuildOut:
    # A poll held here gets the build claimed in this transaction, and answers once it has committed.
    async with handing_over(svc) as handover, svc.as_caller(token) as (session, who):
        pipeline = await pipelines.get_pipeline(session, who, name)
        build = await builds.create_build(
            session, who, pipeline, variables=body.variables, branch=body.branch, sha=body.sha
        )
        online = await handover.claim(session, build.runtime_id) or await _runtime_has_online_runner(
            svc, session, who, build.runtime_id
        )
    out = BuildOut.of(build, svc.build_url(build.id))
    if not online:
        out.warnings.append("no runner of this pipeline's runtime is online: the build waits in the queue")
    return out


async def _runtime_has_online_runner(svc: Services, session: AsyncSession, who: Principal, runtime_id: str) -> bool:
    """As the runners list's "online" (a drained runner takes no build, so it does not count). A poll of the runtime
    waiting here for builds answers it without a query (most build requests, on a busy installation)."""
    if svc.wakeups.waiting_for_builds(runtime_id):
        return True
    return await runtimes.has_online_runner(session, who, runtime_id, online_since(svc.settings))


Text = Annotated[str | None, Query(max_length=255)]


@router.get("/builds")
async def list_builds(
    token: ScopedViewerNow,
    svc: Svc,
    pipeline: Text = None,
    status: Text = None,
    branch: Text = None,
    trigger: Text = None,
    author: Text = None,
    q: Annotated[str | None, Query(max_length=255, description="in the pipeline, branch or commit message")] = None,
    before: Annotated[
        str | None, Query(max_length=32, description="the id of the last build of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[BuildOut]:
    """Newest first; page on with `before` = the last build's id (keyset: as fast deep down as on top)."""
    asked = builds.BuildFilter(
        pipeline=pipeline, status=status, branch=branch, trigger=trigger, author=author, search=q
    )
    async with svc.as_caller(token) as (session, who):
        rows = await builds.list_builds(session, who, where=asked, before=before, limit=limit)
        return [BuildOut.of(b, svc.build_url(b.id)) for b in rows]


@router.get("/builds/{build_id}")
async def show_build(build_id: str, token: ScopedViewerNow, svc: Svc) -> BuildOut:
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        return BuildOut.of(build, svc.build_url(build.id), await builds.list_steps(session, build))


@router.get("/pipelines/{name}/builds/{number}")
async def show_build_by_number(
    name: str, number: Annotated[int, Path(ge=1, le=2**31 - 1)], token: ScopedViewerNow, svc: Svc
) -> BuildOut:
    """A build by its pipeline's number for it, as `outpost build show my-app#42` asks."""
    async with svc.as_caller(token) as (session, who):
        pipeline = await pipelines.get_pipeline(session, who, name)
        build = await builds.get_build_by_number(session, who, pipeline, number)
        return BuildOut.of(build, svc.build_url(build.id), await builds.list_steps(session, build))


@router.post("/builds/{build_id}/cancel")
async def cancel_build(build_id: str, token: AsDeveloperNow, svc: Svc) -> BuildOut:
    async with svc.as_caller(token) as (session, who):
        build = await builds.request_cancel(session, who, build_id)
    svc.wakeups.build_changed(build)  # the poll of the runner that runs it answers cancel_build
    return BuildOut.of(build, svc.build_url(build.id))


@router.post("/builds/{build_id}/restart", status_code=201)
async def restart_build(build_id: str, body: RestartIn, token: ScopedDeveloperNow, svc: Svc) -> BuildOut:
    """A new build of the same branch, commit and variables; `from_failed` skips the steps that succeeded, where
    the runner still holds the build's volume (docs/artifacts.md)."""
    async with handing_over(svc) as handover, svc.as_caller(token) as (session, who):
        old = await builds.get_build(session, who, build_id)
        pipeline = await pipelines.get_pipeline(session, who, old.pipeline_name)
        build = await builds.restart_build(session, who, old, pipeline, from_failed=body.from_failed)
        online = await handover.claim(session, build.runtime_id) or await _runtime_has_online_runner(
            svc, session, who, build.runtime_id
        )
    out = BuildOut.of(build, svc.build_url(build.id))
    if not online:
        out.warnings.append("no runner of this pipeline's runtime is online: the build waits in the queue")
    return out
