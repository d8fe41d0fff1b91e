"""Runner protocol v1 (docs/protocol.md): register, poll, heartbeat, started, steps, logs, finish, late logs."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from outpost.errors import Invalid, TooLarge, Unauthorized
from outpost.server.api.deps import Svc, Token
from outpost.server.dispatch import build_key, hang_up, runtime_key
from outpost.server.models import Account, Runner
from outpost.server.security import now
from outpost.server.services import Services
from outpost.server.store import approvals, audit, builds, gitqueries, integrations, logs, reports, runtimes
from outpost.wire import (
    LEASE_HEADER,
    PREFIX,
    STREAM_PATTERN,
    ApprovalTask,
    BuildFinished,
    BuildStarted,
    CancelBuildTask,
    GitQueryAnswer,
    HeartbeatResponse,
    LateLogs,
    LogAccepted,
    PollRequest,
    PollResponse,
    RegisterRequest,
    RegisterResponse,
    Report,
    ReportAccepted,
    RunBuildTask,
    StepName,
    StepUpdate,
    Task,
)

router = APIRouter(prefix=PREFIX, tags=["runner protocol"])
RECHECK = 2.0  # seconds between store checks while a poll waits, besides wake-ups


@router.post("/register", status_code=201)
async def register(body: RegisterRequest, svc: Svc) -> RegisterResponse:
    async with svc.tx() as session:
        runner, token, runtime, account = await runtimes.register_runner(session, body)
    return RegisterResponse(
        runner_id=runner.id,
        runner_token=token,
        account=account.name,
        runtime=runtime.name,
        lease_ttl=svc.settings.lease_ttl,
        heartbeat_interval=svc.settings.heartbeat_interval,
        max_log_chunk=svc.settings.max_log_chunk,
    )


@router.post("/poll", response_model=None)
async def poll(body: PollRequest, request: Request, token: Token, svc: Svc) -> PollResponse | Response:
    """Held open until there is a task for this runner, the wait is over, the runner hangs up or the
    server stops (204 for the last three)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait, svc.settings.poll_timeout)
    async with svc.tx() as session:
        runner = await runtimes.authenticate_runner(session, token)
        runner.last_seen_at = now()
    runner_id, runtime_id = runner.id, runner.runtime_id
    async with hang_up(request.receive) as gone:
        while not svc.wakeups.closing and not gone.done():
            ticket = svc.wakeups.ticket(runtime_key(runtime_id))
            task = await _next_task(svc, runner_id, body)
            if task is not None:
                return PollResponse(task=task)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await svc.wakeups.wait(ticket, min(remaining, RECHECK), unless=gone)
    return Response(status_code=204)


async def _next_task(svc: Services, runner_id: str, body: PollRequest) -> Task | None:
    async with svc.tx() as session:
        runner = await session.get_one(Runner, runner_id)
        if runner.revoked_at is not None:
            raise Unauthorized("this runner was revoked")
        cancels = await builds.cancel_pending_for(session, runner, body.running)
        if cancels:
            return CancelBuildTask(build_id=cancels[0])
        if answer := await approvals.undelivered(session, runner, body.running):
            return ApprovalTask(build_id=answer[0], approval=answer[1])
        if query := await gitqueries.next_for(session, runner, svc.secrets):  # needs no build slot
            return query
        if body.free_slots <= 0:
            return None
        claimed = await builds.claim_next(session, runner, svc.settings.lease_ttl)
        if claimed is None:
            return None
        build, lease, job_token = claimed
        await audit.secrets_read(session, runner, build)  # the audit log names the secrets handed over
        account = await session.get_one(Account, build.account_id)
        return RunBuildTask(
            build_id=build.id,
            lease_id=lease.id,
            lease_ttl=svc.settings.lease_ttl,
            job_token=job_token,
            account=account.name,
            pipeline=build.pipeline_name,
            yaml=build.yaml,
            yaml_file=build.yaml_file,
            variables={str(k): str(v) for k, v in build.variables.items()},
            secrets=svc.secrets.open_all(build.secrets),
            build_url=svc.build_url(build.id),
            created_at=build.created_at,
            trigger=build.trigger,
            initiator=build.initiator,
            branch=build.branch,
            revision=build.sha,
            event=build.event,
            integrations=await integrations.git_access_for_build(session, svc.secrets, build),
            registries=await integrations.registry_access_for_build(session, svc.secrets, build),
            source=builds.pipeline_source(build),
        )


@router.post("/git-queries/{query_id}/answer")
async def answer_git_query(query_id: str, body: GitQueryAnswer, token: Token, svc: Svc) -> dict[str, str]:
    """A runner's answer to a git query it was handed (authenticated with the runner's own token)."""
    async with svc.tx() as session:
        runner = await runtimes.authenticate_runner(session, token)
        runner.last_seen_at = now()
        query = await gitqueries.answer(session, runner, query_id, body)
        status = query.status
    svc.wakeups.notify(gitqueries.query_key(query_id))
    return {"status": status}


def lease_header(outpost_lease: Annotated[str, Header(alias=LEASE_HEADER)] = "") -> str:
    return outpost_lease


Lease = Annotated[str, Depends(lease_header)]


@router.post("/builds/{build_id}/heartbeat")
async def heartbeat(build_id: str, token: Token, lease: Lease, svc: Svc) -> HeartbeatResponse:
    with svc.availability.serving():
        async with svc.tx() as session:
            held = await builds.hold(session, build_id, lease, token)
            cancel = await builds.heartbeat(session, held, svc.settings.lease_ttl)
            answers = await approvals.waiting_answers(session, held.build)
    return HeartbeatResponse(lease_ttl=svc.settings.lease_ttl, cancel_requested=cancel, approvals=answers)


@router.post("/builds/{build_id}/started")
async def started(build_id: str, body: BuildStarted, token: Token, lease: Lease, svc: Svc) -> dict[str, bool]:
    with svc.availability.serving():
        async with svc.tx() as session:
            held = await builds.hold(session, build_id, lease, token)
            await builds.mark_started(session, held, body)
            builds.renew(held, svc.settings.lease_ttl)  # the runner counts its lease from this call, too
    svc.wakeups.notify(build_key(build_id))
    return {"ok": True}


@router.post("/builds/{build_id}/steps/{step}")
async def step_update(
    build_id: str, step: StepName, body: StepUpdate, token: Token, lease: Lease, svc: Svc
) -> dict[str, str]:
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        row = await builds.update_step(session, held, step, body)
        status = row.status
    svc.wakeups.notify(build_key(build_id))
    return {"status": status}


@router.put("/builds/{build_id}/steps/{step}/log")
async def append_log(
    build_id: str,
    step: Annotated[str, Path(min_length=1, max_length=150, pattern=STREAM_PATTERN)],
    request: Request,
    token: Token,
    lease: Lease,
    svc: Svc,
    offset: Annotated[int, Query(ge=0)],
) -> LogAccepted:
    data = await _read_limited(request, svc.settings.max_log_chunk)
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        size, stored = await logs.append(session, held, step, offset, data)
    if stored:
        svc.wakeups.notify(build_key(build_id))
    return LogAccepted(size=size)


@router.post("/builds/{build_id}/report")
async def report(build_id: str, body: Report, token: Token, lease: Lease, svc: Svc) -> ReportAccepted:
    """Log appends, step updates and the finish in one request and one transaction (all or nothing)."""
    appends = [reports.Append(a.stream, a.offset, _decode(a.data)) for a in body.logs]
    limit = svc.settings.max_log_chunk
    if sum(len(a.data) for a in appends) > limit:
        raise _too_large(f"a report may carry at most {limit} log bytes", limit)
    with svc.availability.serving():
        async with svc.tx() as session:
            held = await builds.hold(session, build_id, lease, token)
            sizes, changed = await reports.apply(
                session, held, appends, [(s.name, s.update) for s in body.steps], body.finish
            )
            builds.renew(held, svc.settings.lease_ttl)  # proof of life, like a heartbeat
    if changed:
        svc.wakeups.notify(build_key(build_id))
    return ReportAccepted(sizes=sizes)


@router.post("/builds/{build_id}/late-logs")
async def late_logs(build_id: str, body: LateLogs, token: Token, lease: Lease, svc: Svc) -> ReportAccepted:
    """What a runner printed before its own lease deadline stopped the build, handed in after the
    lease expired: only by that lease's holder, appended at the end, marked late, no status change."""
    appends = [(a.stream, a.offset, _decode(a.data)) for a in body.logs]
    limit = svc.settings.max_log_chunk
    if sum(len(data) for _, _, data in appends) > limit:
        raise _too_large(f"late logs may carry at most {limit} bytes at once", limit)
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        sizes = await logs.append_late(session, held, appends)
    svc.wakeups.notify(build_key(build_id))
    return ReportAccepted(sizes=sizes)


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("log data must be base64") from None


@router.post("/builds/{build_id}/finish")
async def finish(build_id: str, body: BuildFinished, token: Token, lease: Lease, svc: Svc) -> dict[str, str]:
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        build = await builds.finish(session, held, body)
        status = build.status
    svc.wakeups.notify(build_key(build_id))
    return {"status": status}


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"a log chunk may hold at most {limit} bytes", limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(f"a log chunk may hold at most {limit} bytes", limit)
    return bytes(body)


def _too_large(message: str, limit: int) -> TooLarge:
    return TooLarge(message, max_bytes=limit, error="payload_too_large")  # the code these routes always answered
