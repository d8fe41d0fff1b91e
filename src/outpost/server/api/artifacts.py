"""Build artifacts: a runner uploads the files a step marked (runner protocol, job token and lease), users list and
download them (/api/v1/builds/{id}/artifacts, viewer). Kept `OUTPOST_ARTIFACT_DAYS` days (docs/artifacts.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from outpost.errors import Invalid
from outpost.server.api.deps import ScopedViewer, Svc, Token
from outpost.server.api.runner import Lease
from outpost.server.api.schemas.builds import ArtifactOut
from outpost.server.artifactfiles import files_of
from outpost.server.dispatch import build_key
from outpost.server.services import Services
from outpost.server.store import artifacts, builds
from outpost.wire import MAX_ARTIFACT_PATH, PREFIX, ArtifactAccepted, StepName

router = APIRouter(prefix="/api/v1", tags=["api"])
runner_router = APIRouter(prefix=PREFIX, tags=["runner protocol"])
UPLOADS = PREFIX + "/artifacts"  # the one prefix whose request bodies may be as large as an artifact

ArtifactPath = Annotated[str, Query(min_length=1, max_length=MAX_ARTIFACT_PATH)]


@runner_router.put("/artifacts/{build_id}")
async def upload(
    build_id: str, step: StepName, path: ArtifactPath, request: Request, token: Token, lease: Lease, svc: Svc
) -> ArtifactAccepted:
    """A file a step marked, as the raw body (streamed to disk, never held in memory); the same step and path
    sent again replace it. The upload runs outside any transaction; the lease is checked before and after."""
    if why := bad_path(path):
        raise Invalid(f"artifact path {path!r} {why}")
    files = files_of(svc.settings)
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        builds.require_live(held)
        await artifacts.check_room(session, held.build, svc.settings.max_build_artifacts)
        account_id = held.build.account_id
    received = await files.receive(request.stream(), account_id, svc.settings.max_artifact_bytes)
    try:
        async with svc.tx() as session:
            held = await builds.hold(session, build_id, lease, token)
            builds.require_live(held)
            row, replaced = await artifacts.record(
                session,
                held.build,
                step,
                path,
                size=received.size,
                sha256=received.sha256,
                days=svc.settings.artifact_days,
            )
            files.keep(received, account_id, build_id, row.id)  # before the commit: no row without its file
            answer = ArtifactAccepted(id=row.id, size=row.size, sha256=row.sha256)
    finally:
        received.discard()  # nothing left once kept
    if replaced:
        files.remove(account_id, build_id, replaced)
    svc.wakeups.notify(build_key(build_id))
    return answer


def bad_path(path: str) -> str | None:
    """Artifact paths are relative to the build volume, as the runner found them: nothing that could climb."""
    if path.startswith("/") or "\\" in path:
        return "must be relative to the build volume, with '/' between its parts"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "may not have empty, '.' or '..' parts"
    return None


@router.get("/builds/{build_id}/artifacts")
async def list_artifacts(build_id: str, token: ScopedViewer, svc: Svc) -> list[ArtifactOut]:
    """The build's artifacts that have not expired."""
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        rows = await artifacts.list_for(session, build)
    return [ArtifactOut.read(r, url=f"{svc.public_url}/api/v1/builds/{build_id}/artifacts/{r.id}") for r in rows]


@router.get("/builds/{build_id}/artifacts/{artifact_id}", response_model=None)
async def download(build_id: str, artifact_id: str, token: ScopedViewer, svc: Svc) -> FileResponse:
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        row = await artifacts.get(session, build, artifact_id)
    return files_of(svc.settings).response(row)


async def remove_expired(svc: Services) -> int:
    """Called by the cron every minute: the rows of expired artifacts, then their files."""
    async with svc.tx() as session:
        gone = await artifacts.take_expired(session)
    files = files_of(svc.settings)
    for row in gone:
        files.remove(row.account_id, row.build_id, row.id)
    return len(gone)
