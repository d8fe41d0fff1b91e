"""Answering a pending-approval step (/api/v1/builds/{id}/steps/{step}/approve, /deny)."""

from __future__ import annotations

from fastapi import APIRouter

from outpost.server.api.deps import Access, AsDeveloper, Svc
from outpost.server.api.schemas.builds import BuildOut
from outpost.server.services import Services
from outpost.server.store import approvals, builds

router = APIRouter(prefix="/api/v1", tags=["api"])


@router.post("/builds/{build_id}/steps/{step}/approve")
async def approve_step(build_id: str, step: str, token: AsDeveloper, svc: Svc) -> BuildOut:
    return await _answer(build_id, step, "approved", token, svc)


@router.post("/builds/{build_id}/steps/{step}/deny")
async def deny_step(build_id: str, step: str, token: AsDeveloper, svc: Svc) -> BuildOut:
    return await _answer(build_id, step, "denied", token, svc)


async def _answer(build_id: str, step: str, decision: str, token: Access, svc: Services) -> BuildOut:
    """Records the answer and wakes the runner's open poll, which hands it over at once."""
    async with svc.as_caller(token) as (session, who):
        await approvals.decide(session, who, build_id, step, decision)
        build = await builds.get_build(session, who, build_id)
        out = BuildOut.of(build, svc.build_url(build.id), await builds.list_steps(session, build))
    svc.wakeups.build_changed(build)  # the poll of the runner that runs it hands the answer over
    return out
