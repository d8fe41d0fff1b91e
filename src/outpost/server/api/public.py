"""The public API (/api/v1) used by the CLI, scripts and, later, the UI."""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from outpost import __version__
from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline, summary
from outpost.server.api.deps import (
    Access,
    AsAdmin,
    AsDeveloper,
    AsSuperuser,
    AsViewer,
    ScopedDeveloper,
    ScopedViewer,
    Svc,
)
from outpost.server.api.schemas.accounts import AccountIn, AccountOut, TokenIn, TokenOut, WhoAmI
from outpost.server.api.schemas.base import iso
from outpost.server.api.schemas.builds import BuildIn, BuildOut
from outpost.server.api.schemas.health import Health
from outpost.server.api.schemas.logs import LogPage, LogPiece
from outpost.server.api.schemas.pipelines import PipelineIn, PipelineOut, PipelinePatch, ValidateIn, ValidateOut
from outpost.server.api.schemas.runtimes import RunnerOut, RuntimeIn, RuntimeOut
from outpost.server.dispatch import build_key, hang_up, runtime_key
from outpost.server.models import Pipeline, Runner, Runtime
from outpost.server.security import now
from outpost.server.services import Services
from outpost.server.store import accounts, approvals, audit, builds, logs, pipelines, runtimes
from outpost.server.store.accounts import Principal
from outpost.wire import FINAL_BUILD_STATUSES

router = APIRouter(prefix="/api/v1", tags=["api"])
MAX_PAGE_BYTES = 1024 * 1024


@router.get("/health")
async def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/whoami")
async def whoami(token: ScopedViewer, svc: Svc) -> WhoAmI:
    async with svc.as_caller(token) as (_session, who):
        return WhoAmI(
            account=who.account_name,
            token=who.token_name,
            superuser=who.is_superuser,
            role=who.role,
            pipeline=who.pipeline_name,
            expires_at=iso(who.expires_at),
        )


@router.post("/accounts", status_code=201)
async def create_account(body: AccountIn, token: AsSuperuser, svc: Svc) -> AccountOut:
    async with svc.as_caller(token) as (session, who):
        accounts.require_superuser(who)
        runtimes.check_name("account", body.name)
        account = await accounts.create_account(session, body.name, who)
        _row, secret = await accounts.create_token(session, account.id, "admin", created_by=who.actor)
    return AccountOut(name=account.name, token=secret)


# --- tokens ----------------------------------------------------------------------------------------


@router.post("/tokens", status_code=201)
async def create_token(body: TokenIn, token: AsAdmin, svc: Svc) -> TokenOut:
    async with svc.as_caller(token) as (session, who):
        row, secret = await accounts.grant_token(
            session, who, body.name, role=body.role, pipeline=body.pipeline, expires_in=body.expires
        )
        return TokenOut.of(row, secret, body.pipeline)


@router.get("/tokens")
async def list_tokens(token: AsAdmin, svc: Svc) -> list[TokenOut]:
    async with svc.as_caller(token) as (session, who):
        names = {p.id: p.name for p in await pipelines.list_pipelines(session, who)}
        return [TokenOut.of(t, None, names.get(t.pipeline_id or "")) for t in await accounts.list_tokens(session, who)]


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, token: AsAdmin, svc: Svc) -> TokenOut:
    async with svc.as_caller(token) as (session, who):
        return TokenOut.of(await accounts.revoke_token(session, who, token_id))


# --- runtimes and runners ------------------------------------------------------------------------


def _runner_out(svc: Services, runner: Runner, runtime_name: str) -> RunnerOut:
    horizon = now() - (svc.settings.poll_timeout + svc.settings.heartbeat_interval + 5)
    return RunnerOut(
        id=runner.id,
        name=runner.name,
        runtime=runtime_name,
        version=runner.version,
        executor=runner.executor,
        concurrency=runner.concurrency,
        hostname=runner.hostname,
        online=bool(runner.last_seen_at and runner.last_seen_at > horizon),
        last_seen_at=iso(runner.last_seen_at),
        created_at=iso(runner.created_at),
    )


def _with_install_token(svc: Services, runtime: Runtime, install: str) -> RuntimeOut:
    return RuntimeOut(
        name=runtime.name,
        default=runtime.is_default,
        created_at=iso(runtime.created_at),
        install_token=install,
        install_command=f"outpost runner start --url {svc.public_url} --token {install}",
    )


@router.post("/runtimes", status_code=201)
async def create_runtime(body: RuntimeIn, token: AsAdmin, svc: Svc) -> RuntimeOut:
    async with svc.as_caller(token) as (session, who):
        runtime = await runtimes.create_runtime(session, who, body.name)
        install = await runtimes.create_install_token(session, runtime)
    return _with_install_token(svc, runtime, install)


@router.get("/runtimes")
async def list_runtimes(token: AsViewer, svc: Svc) -> list[RuntimeOut]:
    async with svc.as_caller(token) as (session, who):
        all_runners = await runtimes.list_runners(session, who)
        out = []
        for rt in await runtimes.list_runtimes(session, who):
            mine = [_runner_out(svc, r, rt.name) for r in all_runners if r.runtime_id == rt.id]
            out.append(RuntimeOut(name=rt.name, default=rt.is_default, created_at=iso(rt.created_at), runners=mine))
        return out


@router.post("/runtimes/{name}/install-tokens", status_code=201)
async def create_install_token(name: str, token: AsAdmin, svc: Svc) -> RuntimeOut:
    async with svc.as_caller(token) as (session, who):
        runtime = await runtimes.get_runtime(session, who, name)
        install = await runtimes.create_install_token(session, runtime)
        await audit.record(session, who, "install_token.create", runtime.name)
    return _with_install_token(svc, runtime, install)


@router.get("/runners")
async def list_runners(token: AsViewer, svc: Svc) -> list[RunnerOut]:
    async with svc.as_caller(token) as (session, who):
        names = {rt.id: rt.name for rt in await runtimes.list_runtimes(session, who)}
        return [_runner_out(svc, r, names.get(r.runtime_id, "")) for r in await runtimes.list_runners(session, who)]


@router.delete("/runners/{runner_id}")
async def revoke_runner(runner_id: str, token: AsAdmin, svc: Svc) -> dict[str, str | list[str]]:
    """The runner's token and its job tokens are void at once, and its leases end in the same transaction."""
    async with svc.as_caller(token) as (session, who):
        runner = await runtimes.revoke_runner(session, who, runner_id)
        ended = [b.id for b in await builds.end_leases_of(session, runner)]
    svc.wakeups.notify(runtime_key(runner.runtime_id))  # its open poll answers 401; requeued builds are claimed
    for build_id in ended:
        svc.wakeups.notify(build_key(build_id))
    return {"id": runner.id, "status": "revoked", "builds": ended}


# --- pipelines -----------------------------------------------------------------------------------


async def _pipeline_out(session: AsyncSession, p: Pipeline) -> PipelineOut:
    runtime = await session.get_one(Runtime, p.runtime_id)
    return PipelineOut(
        id=p.id,
        name=p.name,
        runtime=runtime.name,
        yaml_file=p.yaml_file,
        yaml=p.yaml,
        variables=p.variables,
        secrets=sorted(p.secrets),
        created_at=iso(p.created_at),
        updated_at=iso(p.updated_at),
        repo=p.repo,
        git=p.git,
        revision=p.revision,
        approval_role=p.approval_role,
        approval_requires_other=p.approval_requires_other,
    )


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


# --- builds --------------------------------------------------------------------------------------


@router.post("/pipelines/{name}/builds", status_code=201)
async def run_pipeline(name: str, body: BuildIn, token: ScopedDeveloper, svc: Svc) -> BuildOut:
    async with svc.as_caller(token) as (session, who):
        pipeline = await pipelines.get_pipeline(session, who, name)
        build = await builds.create_build(
            session, who, pipeline, variables=body.variables, branch=body.branch, sha=body.sha
        )
        online = await _runtime_has_online_runner(svc, session, who, build.runtime_id)
    svc.wakeups.notify(runtime_key(build.runtime_id))
    out = BuildOut.of(build, svc.build_url(build.id))
    if not online:
        out.warnings.append("no runner of this pipeline's runtime is online: the build waits in the queue")
    return out


async def _runtime_has_online_runner(svc: Services, session: AsyncSession, who: Principal, runtime_id: str) -> bool:
    runtime = await session.get_one(Runtime, runtime_id)
    return any(_runner_out(svc, r, "").online for r in await runtimes.list_runners(session, who, runtime))


@router.get("/builds")
async def list_builds(
    token: ScopedViewer,
    svc: Svc,
    pipeline: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[BuildOut]:
    async with svc.as_caller(token) as (session, who):
        rows = await builds.list_builds(session, who, pipeline=pipeline, status=status, limit=limit)
        return [BuildOut.of(b, svc.build_url(b.id)) for b in rows]


@router.get("/builds/{build_id}")
async def show_build(build_id: str, token: ScopedViewer, svc: Svc) -> BuildOut:
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        return BuildOut.of(build, svc.build_url(build.id), await builds.list_steps(session, build))


@router.post("/builds/{build_id}/cancel")
async def cancel_build(build_id: str, token: AsDeveloper, svc: Svc) -> BuildOut:
    async with svc.as_caller(token) as (session, who):
        build = await builds.request_cancel(session, who, build_id)
    svc.wakeups.notify(runtime_key(build.runtime_id))
    svc.wakeups.notify(build_key(build.id))
    return BuildOut.of(build, svc.build_url(build.id))


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
    svc.wakeups.notify(runtime_key(build.runtime_id))
    svc.wakeups.notify(build_key(build.id))
    return out


@router.get("/builds/{build_id}/log")
async def follow_log(
    build_id: str,
    request: Request,
    token: ScopedViewer,
    svc: Svc,
    after: Annotated[int, Query(ge=0)] = 0,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> LogPage:
    """Log pieces of every step accepted after the cursor; with `wait`, held until there are some
    (or the client hangs up, or the server stops)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with hang_up(request.receive) as gone:
        while True:
            ticket = svc.wakeups.ticket(build_key(build_id))
            async with svc.as_caller(token) as (session, who):
                build = await builds.get_build(session, who, build_id)
                pieces = await logs.read_after(session, build, after, MAX_PAGE_BYTES)
            finished = build.status in FINAL_BUILD_STATUSES
            remaining = deadline - loop.time()
            if pieces or finished or remaining <= 0 or gone.done() or svc.wakeups.closing:
                return LogPage(
                    build=build.id,
                    status=build.status,
                    finished=finished and not pieces,
                    cursor=pieces[-1].cursor if pieces else after,
                    pieces=[
                        LogPiece(cursor=p.cursor, step=p.step, offset=p.offset, data=base64.b64encode(p.data).decode())
                        for p in pieces
                    ],
                )
            await svc.wakeups.wait(ticket, min(remaining, 2.0), unless=gone)


@router.get("/builds/{build_id}/steps/{step}/log")
async def step_log(build_id: str, step: str, token: ScopedViewer, svc: Svc) -> Response:
    async with svc.as_caller(token) as (session, who):
        build = await builds.get_build(session, who, build_id)
        row = await builds.find_step(session, build, step)
        data = await logs.read_step_log(session, row)
    return Response(data, media_type="text/plain; charset=utf-8")
