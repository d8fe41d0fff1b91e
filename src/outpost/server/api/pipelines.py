"""Pipelines (/api/v1/pipelines) and validating a pipeline file without saving it (/validate)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline, summary
from outpost.server.api.deps import AsDeveloper, ScopedViewer, Svc
from outpost.server.api.schemas.pipelines import PipelineIn, PipelineOut, PipelinePatch, ValidateIn, ValidateOut
from outpost.server.models import Pipeline, Runtime
from outpost.server.store import pipelines

router = APIRouter(prefix="/api/v1", tags=["api"])


async def _pipeline_out(session: AsyncSession, p: Pipeline) -> PipelineOut:
    runtime = await session.get_one(Runtime, p.runtime_id)
    return PipelineOut.read(p, runtime=runtime.name, secrets=sorted(p.secrets))


@router.post("/pipelines", status_code=201)
async def create_pipeline(body: PipelineIn, token: AsDeveloper, svc: Svc) -> PipelineOut:
    async with svc.as_caller(token) as (session, who):
        p = await pipelines.create_pipeline(
            session,
            who,
            name=body.name,
            yaml=body.yaml,
            yaml_file=body.yaml_file,
            runtime=body.runtime,
            variables=body.variables,
            sealed_secrets=svc.secrets.seal_all(body.secrets),
            repo=body.repo,
            git=body.git,
            revision=body.revision,
            approval_role=body.approval_role,
            approval_requires_other=body.approval_requires_other,
        )
        return await _pipeline_out(session, p)


@router.get("/pipelines")
async def list_pipelines(token: ScopedViewer, svc: Svc) -> list[PipelineOut]:
    async with svc.as_caller(token) as (session, who):
        return [await _pipeline_out(session, p) for p in await pipelines.list_pipelines(session, who)]


@router.get("/pipelines/{name}")
async def show_pipeline(name: str, token: ScopedViewer, svc: Svc) -> PipelineOut:
    async with svc.as_caller(token) as (session, who):
        return await _pipeline_out(session, await pipelines.get_pipeline(session, who, name))


@router.patch("/pipelines/{name}")
async def update_pipeline(name: str, body: PipelinePatch, token: AsDeveloper, svc: Svc) -> PipelineOut:
    async with svc.as_caller(token) as (session, who):
        p = await pipelines.update_pipeline(
            session,
            who,
            name,
            yaml=body.yaml,
            yaml_file=body.yaml_file,
            runtime=body.runtime,
            variables=body.variables,
            sealed_secrets=None if body.secrets is None else svc.secrets.seal_all(body.secrets),
            repo=body.repo,
            git=body.git,
            revision=body.revision,
            approval_role=body.approval_role,
            approval_requires_other=body.approval_requires_other,
        )
        return await _pipeline_out(session, p)


@router.post("/validate")
async def validate(body: ValidateIn) -> ValidateOut:
    try:
        parsed = load_pipeline(body.yaml, body.file)
    except PipelineError as exc:
        return ValidateOut(valid=False, problems=[str(p) for p in exc.problems])
    return ValidateOut(valid=True, problems=[], summary=summary(parsed))
