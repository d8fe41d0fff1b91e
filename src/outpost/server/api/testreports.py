"""Test reports: the test cases of the JUnit reports a step names (`junit:`), sent by the runner after the step
(runner protocol) and shown failures first (/api/v1/builds/{id}/annotations, viewer)."""

from __future__ import annotations

from fastapi import APIRouter

from outpost.server.api.deps import ScopedViewer, Svc, Token
from outpost.server.api.runner import Lease
from outpost.server.api.schemas.builds import AnnotationOut, AnnotationsOut
from outpost.server.dispatch import build_key
from outpost.server.store import builds, testreports
from outpost.wire import PREFIX, JUnitReport

router = APIRouter(prefix="/api/v1", tags=["api"])
runner_router = APIRouter(prefix=PREFIX, tags=["runner protocol"])


@runner_router.post("/builds/{build_id}/annotations")
async def report(build_id: str, body: JUnitReport, token: Token, lease: Lease, svc: Svc) -> dict[str, int]:
    """The test cases of a step's reports; they replace what the step sent before."""
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        builds.require_live(held)
        count = await testreports.replace(session, held.build, body.step, body.cases)
    svc.wakeups.notify(build_key(build_id))
    return {"cases": count}


@router.get("/builds/{build_id}/annotations")
async def list_annotations(build_id: str, token: ScopedViewer, svc: Svc) -> AnnotationsOut:
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        found = await testreports.summary(session, build)
    cases = [AnnotationOut.model_validate(c) for c in found.cases]
    return AnnotationsOut(total=found.total, failed=found.failed, counts=found.counts, cases=cases)
