"""Runner protocol v1 (docs/protocol.md): register, poll, heartbeat, started, steps, logs, finish, late logs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid, StoreError, TooLarge, Unauthorized
from outpost.server import jsonbodies
from outpost.server.api.deps import Svc, Token
from outpost.server.dispatch import Waiter, build_key, hang_up, runtime_key
from outpost.server.guards import unstorable
from outpost.server.models import Build, Runner
from outpost.server.models import Lease as LeaseRow
from outpost.server.security import token_hash
from outpost.server.services import Services
from outpost.server.store import (
    accounts,
    approvals,
    audit,
    builds,
    clusters,
    gitqueries,
    integrations,
    logs,
    reports,
    runtimes,
)
from outpost.wire import (
    LEASE_HEADER,
    PREFIX,
    REPORT_CONTENT_TYPE,
    REPORTS_IN_FLIGHT_HEADER,
    STREAM_PATTERN,
    ApprovalTask,
    BadReport,
    BuildFinished,
    BuildStarted,
    CancelBuildTask,
    ClusterCheckAnswer,
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
    ReportHead,
    RunBuildTask,
    StepName,
    StepUpdate,
    Task,
    report_appends,
    split_report,
)

router = APIRouter(prefix=PREFIX, tags=["runner protocol"])
M = TypeVar("M", bound=BaseModel)
# Reports of one build a runner may have in flight at once (told in every report's answer), and how long a report
# whose offset leaves a gap waits for the earlier ones this process holds (then 416).
REPORTS_IN_FLIGHT = 2
REPORT_GAP_WAIT = 10.0


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
async def poll(body: PollRequest, request: Request, token: Token, svc: Svc) -> Response:
    """Held open until there is a task for this runner, the wait is over, the runner hangs up or the
    server stops (204 for the last three). While it waits it runs no query: the dispatcher wakes it
    (server/dispatch.py). 503 + Retry-After when this process already holds its maximum of polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait, svc.settings.poll_timeout)
    wakeups = svc.wakeups
    wakeups.admit(svc.settings.max_polls)  # before any query: an overloaded server refuses cheaply
    limit = body.max_tasks or 1
    hashed = token_hash(token)
    known = wakeups.passes.get(hashed)
    if known is not None and not body.running and wakeups.is_quiet(known.runtime_id):
        # A renewal with nothing to look up: no build of its own running (so no cancel nor approval answer to
        # hand over), a quiet runtime (no claim nor git query to try), and a token an earlier look proved, which no
        # signal for the runner has undone since (server/passes.py). No transaction: it waits at once. Nothing
        # awaits between this test and `enter`, so a signal for the runner cannot slip in between.
        runner_id, runtime_id = known.runner_id, known.runtime_id
        takes = body.free_slots > 0 and not known.drained
    else:
        mark = wakeups.mark()  # before the transaction: work signalled after it may be missing from its snapshot
        proof = wakeups.passes.mark()  # likewise for a revocation or a drain
        async with svc.tx() as session:  # the first look shares the authentication's transaction
            runner = await runtimes.authenticate_runner(session, token)
            found = await _next_tasks(svc, session, runner, body, limit, mark)
        runner_id, runtime_id, takes = runner.id, runner.runtime_id, takes_builds(runner, body)
        drained = runner.drained_at is not None
        wakeups.passes.remember(hashed, proof, runner_id=runner_id, runtime_id=runtime_id, drained=drained)
        if found.tasks:
            svc.presence.seen(runner_id)
            if found.more_builds:
                wakeups.work(runtime_id)
            return _answer(body, found.tasks)
    svc.presence.seen(runner_id)  # written with the others heard from within the second (server/presence.py)
    # From here on wake-ups reach this poll; what was signalled since the look makes it look again (dispatch.py).
    waiter = wakeups.enter(runner_id, runtime_id, builds=takes, max_polls=svc.settings.max_polls)
    try:
        async with hang_up(request.receive) as gone:
            while not wakeups.closing and not gone.done() and not waiter.superseded and not waiter.expired:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                if wakeups.idle(waiter):
                    await wakeups.sleep(waiter, remaining, unless=gone)
                    if waiter.handed is not None:  # a build request took this poll (`Handover`): its answer first
                        handed, waiter.handed = await waiter.handed, None
                        if handed is not None:
                            if gone.done():  # nobody to answer: the build goes back to the queue now
                                await give_back(svc, handed)
                                break
                            return _answer(body, [handed])
                    continue  # woken, or the wait or the runner is gone: the loop's test says which
                why, waiter.woken_for = waiter.woken_for, ""
                waiter.event.clear()  # a wake-up from now on makes us look again
                try:
                    mark = wakeups.mark()
                    async with svc.tx() as session:
                        runner = await builds.runner_for_look(session, runner_id)
                        if runner.revoked_at is not None:
                            raise Unauthorized("this runner was revoked")
                        found = await _next_tasks(svc, session, runner, body, limit, mark)
                        waiter.builds = takes_builds(runner, body)  # drained or undrained meanwhile
                except BaseException:
                    waiter.woken_for = waiter.woken_for or why  # leave() passes on what this look did not use
                    raise
                if found.more_builds or (why == "build" and not found.tried_builds):
                    wakeups.work(runtime_id)  # pass it on: this poll leaves claimable builds behind
                if why == "query" and found.tasks and not found.tried_queries:
                    wakeups.git_query(runtime_id)
                if found.tasks:
                    return _answer(body, found.tasks)
    finally:
        wakeups.leave(waiter)
    return Response(status_code=204)


def takes_builds(runner: Runner, body: PollRequest) -> bool:
    """Whether the poll may claim builds, so the dispatcher wakes it for them: a free slot, and not drained."""
    return body.free_slots > 0 and runner.drained_at is None


def _answer(body: PollRequest, tasks: list[Task]) -> Response:
    """A list to a runner that sent max_tasks, one task otherwise; the other field is left out, as a runner of
    the previous version refuses fields it does not know. So is every field left unset at any depth: a newer
    optional field (a restart's `resume`) then reaches only the builds that use it."""
    answer = PollResponse(tasks=tasks) if body.max_tasks is not None else PollResponse(task=tasks[0])
    content = answer.model_dump(mode="json", exclude_none=True)
    return JSONResponse(content)


@dataclass
class _Found:
    tasks: list[Task] = field(default_factory=list)
    tried_builds: bool = False  # it ran a claim (so a wake-up for builds was used)
    tried_queries: bool = False
    more_builds: bool = False  # it claimed all it could and more builds wait


async def _next_tasks(
    svc: Services, session: AsyncSession, runner: Runner, body: PollRequest, limit: int, mark: int
) -> _Found:
    """What the runner gets now, in this order: cancels, approval answers, a git query, builds (at most
    free_slots); at most `limit` tasks in all. In a runtime the dispatcher knows to be quiet (nothing claimable
    and no signal since, see dispatch.py) the git-query and claim queries are skipped: an idle poll's renewal
    then runs only its authentication; in one it knows to have no git query, the git-query query. `mark` is the
    dispatcher's, taken before the transaction began."""
    found = _Found()
    tasks = found.tasks
    for build_id in (await builds.cancel_pending_for(session, runner, body.running))[:limit]:
        tasks.append(CancelBuildTask(build_id=build_id))
    while len(tasks) < limit and (answer := await approvals.undelivered(session, runner, body.running)):
        tasks.append(ApprovalTask(build_id=answer[0], approval=answer[1]))
    quiet = svc.wakeups.is_quiet(runner.runtime_id)
    if len(tasks) < limit:
        found.tried_queries = True
        if not svc.wakeups.queries_quiet(runner.runtime_id):
            if query := await gitqueries.next_for(session, runner, svc.secrets):  # needs no slot
                tasks.append(query)
            else:  # none: the looks after this one skip this query until a git query is signalled
                svc.wakeups.no_queries(runner.runtime_id, mark)
    slots = min(body.free_slots, limit - len(tasks)) if runner.drained_at is None else 0
    if slots <= 0:
        return found
    found.tried_builds = True
    if quiet:
        return found
    for _ in range(slots):
        claimed = await builds.claim_next(session, runner, svc.settings.lease_ttl)
        if claimed is None:
            if not tasks:  # neither a git query nor a build: the runtime is quiet for the next looks
                svc.wakeups.quiet(runner.runtime_id, mark)
            return found
        tasks.append(await _run_task(svc, session, runner, claimed.build, claimed.lease, claimed.job_token))
        found.more_builds = claimed.more
    return found


class Handover:
    """A build request's claim for a poll held in this process: the request's own transaction inserts the build,
    claims the runtime's oldest claimable build for the oldest idle poll that may take one (`Wakeups.take`), and
    makes its task, so the poll answers once that one commit is done (`handing_over`), without a wake-up and a
    claim transaction of its own. The claim is `claim_next`'s, for the runner read in this transaction: the same
    order, trigger limits, revocation and drain. When there is no such poll here, or it claims nothing, the build
    is signalled as any queued build (other replicas' polls included)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.runtime_id = ""
        self.waiter: Waiter | None = None
        self.task: RunBuildTask | None = None
        self.more = False  # another build of the runtime was claimable too

    async def claim(self, session: AsyncSession, runtime_id: str) -> bool:
        """In the request's transaction, after its build was inserted: True if a held poll's build was claimed."""
        self.runtime_id = runtime_id
        waiter = self.waiter = self.svc.wakeups.take(runtime_id)
        if waiter is None:
            return False
        try:
            runner = await builds.runner_for_look(session, waiter.runner_id)
            claimed = await builds.claim_next(session, runner, self.svc.settings.lease_ttl)
        except Unauthorized:  # gone or revoked (claim_next checks): the poll finds out by its own look
            claimed = None
        if claimed is None:
            self.abandon()
            return False
        self.task = await _run_task(self.svc, session, runner, claimed.build, claimed.lease, claimed.job_token)
        self.more = claimed.more
        return True

    def deliver(self) -> None:
        """After the commit: the task to its poll, or the signal a queued build gives."""
        wakeups = self.svc.wakeups
        if self.task is None or self.waiter is None:
            wakeups.notify(runtime_key(self.runtime_id))
            return
        if not wakeups.hand(self.waiter, self.task):  # the poll's task ended meanwhile
            self.svc.spawn(give_back(self.svc, self.task))
        if self.more:
            wakeups.work(self.runtime_id)

    def abandon(self) -> None:
        """The poll waits again (the claim found nothing, or the request failed and its transaction rolled back)."""
        if self.waiter is not None:
            self.svc.wakeups.put_back(self.waiter)
        self.task = None


@contextlib.asynccontextmanager
async def handing_over(svc: Services) -> AsyncIterator[Handover]:
    """Around a build request's transaction: `Handover.claim` inside it, the hand-over once it committed. A poll
    handed a build answers before the request's own answer is made (one loop turn: the runner starts on it while
    the 201 is built)."""
    handover = Handover(svc)
    try:
        yield handover
    except BaseException:
        handover.abandon()
        raise
    handover.deliver()
    if handover.task is not None:
        await asyncio.sleep(0)


async def give_back(svc: Services, task: RunBuildTask) -> None:
    """A build claimed for a poll that cannot answer any more goes back to the queue and wakes the next poll."""
    async with svc.tx() as session:
        build = await builds.give_back(session, task.build_id, task.lease_id)
    if build is not None:
        svc.wakeups.build_changed(build)


async def _run_task(
    svc: Services, session: AsyncSession, runner: Runner, build: Build, lease: LeaseRow, job_token: str
) -> RunBuildTask:
    await audit.secrets_read(session, runner, build)  # the audit log names the secrets handed over
    svc.metrics.claimed(build)
    rows = await integrations.of_build_account(session, build)  # one query for the four below
    task = RunBuildTask(
        build_id=build.id,
        lease_id=lease.id,
        lease_ttl=svc.settings.lease_ttl,
        job_token=job_token,
        account=await accounts.name_of(session, build.account_id),
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
        integrations=await integrations.git_access_for_build(session, svc.secrets, build, rows=rows),
        registries=await integrations.registry_access_for_build(session, svc.secrets, build, rows=rows),
        clusters=await clusters.cluster_access_for_build(session, svc.secrets, build, rows=rows),  # allow-lists' say
        clusters_refused=await clusters.clusters_refused_to_build(session, build, rows=rows),
        source=builds.pipeline_source(build),
        resume=await builds.resume_of(session, build),
    )
    await audit.credentials_read(session, runner, build, task)  # names the integrations whose credentials went
    return task


@router.post("/git-queries/{query_id}/answer")
async def answer_git_query(query_id: str, body: GitQueryAnswer, token: Token, svc: Svc) -> dict[str, str]:
    """A runner's answer to a git query it was handed (authenticated with the runner's own token)."""
    async with svc.tx() as session:
        runner = await runtimes.authenticate_runner(session, token)
        query = await gitqueries.answer(session, runner, query_id, body)
        status = query.status
    svc.presence.seen(runner.id)
    svc.wakeups.notify(gitqueries.query_key(query_id))
    return {"status": status}


@router.post("/cluster-checks/{query_id}/answer")
async def answer_cluster_check(query_id: str, body: ClusterCheckAnswer, token: Token, svc: Svc) -> dict[str, str]:
    """A runner's answer to a kubernetes integration's connection test it was handed (as a git query's)."""
    async with svc.tx() as session:
        runner = await runtimes.authenticate_runner(session, token)
        query = await gitqueries.answer(session, runner, query_id, body)
        status = query.status
    svc.presence.seen(runner.id)
    svc.wakeups.notify(gitqueries.query_key(query_id))
    return {"status": status}


async def lease_header(outpost_lease: Annotated[str, Header(alias=LEASE_HEADER)] = "") -> str:
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
    svc.metrics.log_bytes.inc(len(data))
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        size, stored = await logs.append(session, held, step, offset, data)
    if stored:
        svc.wakeups.notify(build_key(build_id))
    return LogAccepted(size=size)


@router.post("/builds/{build_id}/report", response_model=ReportAccepted)
async def report(build_id: str, request: Request, token: Token, lease: Lease, svc: Svc) -> Response:
    """Log appends, step updates and the finish in one request and one transaction (all or nothing). The body
    is a `Report` (JSON, log bytes in base64) or, from current runners, a raw report (`REPORT_CONTENT_TYPE`:
    a JSON head and the log bytes as they are). The answer is written as it is: FastAPI's validation of the
    model it would build again costs more than the dict."""
    # In this process's hands from before its body is read until it is answered (server/arrivals.py).
    with svc.arrivals.arrived(build_id) as arrival:
        sizes = await _report(build_id, request, token, lease, svc, arrival)
    return JSONResponse({"sizes": sizes}, headers={REPORTS_IN_FLIGHT_HEADER: str(REPORTS_IN_FLIGHT)})


async def _report(
    build_id: str, request: Request, token: str, lease: str, svc: Services, arrival: int
) -> dict[str, int]:
    raw = await request.body()
    if request.headers.get("content-type", "").startswith(REPORT_CONTENT_TYPE):
        head = _raw_head(raw)
        body: Report | ReportHead = head
        try:
            appends = [reports.Append(*a) for a in report_appends(head, split_report(raw)[1])]
        except BadReport as exc:
            raise Invalid(str(exc)) from None
    else:
        body = _validated(Report, raw)
        appends = [reports.Append(a.stream, a.offset, _decode(a.data)) for a in body.logs]
    limit = svc.settings.max_log_chunk
    if sum(len(a.data) for a in appends) > limit:
        raise _too_large(f"a report may carry at most {limit} log bytes", limit)
    svc.metrics.log_bytes.inc(sum(len(a.data) for a in appends))
    held, outcome = await _apply_report(svc, build_id, lease, token, body, appends, arrival)
    if outcome.refused:
        svc.wakeups.build_changed(held.build)
        raise Conflict("the build was cancelled before it started", error="lease_lost")
    if outcome.changed and (body.started is not None or body.steps or body.finish is not None):
        svc.wakeups.build_changed(held.build)  # its followers; if it finished, its trigger may have room
    elif outcome.changed:  # log bytes only: nothing a poll hands out (a cancel, an approval) can follow from them
        svc.wakeups.notify(build_key(build_id))
    return outcome.sizes


async def _apply_report(
    svc: Services,
    build_id: str,
    lease: str,
    token: str,
    body: Report | ReportHead,
    appends: list[reports.Append],
    arrival: int,
) -> tuple[builds.Held, reports.Outcome]:
    """Applies the report in one transaction (store/reports.py): the held lease and what the report did. A gap
    that an earlier report of the build, still in this process's hands, may fill (a runner's reports in flight,
    the later one handled first) waits for those and is tried again; one that nothing earlier fills is 416."""
    while True:
        try:
            with svc.availability.serving():
                async with svc.engine.connect() as conn:  # no session: the report needs no ORM object
                    held, outcome = await reports.apply(
                        conn, build_id, lease, token, body, appends, svc.settings.lease_ttl
                    )
            return held, outcome
        except logs.OffsetGap:
            if not await svc.arrivals.earlier_done(build_id, arrival, REPORT_GAP_WAIT):
                raise


@router.post("/builds/{build_id}/late-logs")
async def late_logs(build_id: str, body: LateLogs, token: Token, lease: Lease, svc: Svc) -> ReportAccepted:
    """What a runner printed before its own lease deadline stopped the build, handed in after the
    lease expired: only by that lease's holder, appended at the end, marked late, no status change."""
    appends = [(a.stream, a.offset, _decode(a.data)) for a in body.logs]
    limit = svc.settings.max_log_chunk
    if sum(len(data) for _, _, data in appends) > limit:
        raise _too_large(f"late logs may carry at most {limit} bytes at once", limit)
    svc.metrics.log_bytes.inc(sum(len(data) for _, _, data in appends))
    async with svc.tx() as session:
        held = await builds.hold(session, build_id, lease, token)
        sizes = await logs.append_late(session, held, appends)
    svc.wakeups.notify(build_key(build_id))
    return ReportAccepted(sizes=sizes)


def _raw_head(raw: bytes) -> ReportHead:
    """The head of a raw report, held to what the JSON guard holds other bodies to (RefuseNul lets raw ones by)."""
    try:
        head, _ = split_report(raw)
    except BadReport as exc:
        raise Invalid(str(exc)) from None
    if reason := jsonbodies.too_deep(head):
        raise StoreError(reason, error="invalid_request")  # 400, as the guard answers
    if unstorable(head):
        raise Invalid("NUL characters and unpaired surrogates are not allowed in request bodies")
    return _validated(ReportHead, head)


def _validated(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:  # answered like a body FastAPI validated itself
        raise RequestValidationError(exc.errors(include_url=False)) from None


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
    svc.wakeups.build_changed(build)
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
