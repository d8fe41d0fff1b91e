"""Git queries in the public API (`/api/v1/integrations/git/{name}/branches|file|changed-files`), and a
kubernetes integration's connection test (`/api/v1/integrations/cluster/{name}/check`). They never touch the Git
server or the cluster from here: they wait for a runner of the runtime to answer through its own poll
connection (docs/git.md, docs/clusters.md). The web UI's cluster test waits the same way (`ask_runner`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.api.deps import Access, AsAdmin, AsDeveloper, Svc
from outpost.server.api.schemas.gitqueries import BranchesOut, BranchOut, ChangedFilesOut, FileOut
from outpost.server.api.schemas.integrations import ClusterCheckOut
from outpost.server.dispatch import hang_up
from outpost.server.models import Runner
from outpost.server.security import now
from outpost.server.services import Services
from outpost.server.store import gitqueries
from outpost.server.store import integrations as store
from outpost.server.store.accounts import Principal
from outpost.wire import GitQueryKind

# A transaction on behalf of the asker, opened anew for each look: the API's token checks, or the UI's session.
Caller = Callable[[], AbstractAsyncContextManager[tuple[AsyncSession, Principal]]]

router = APIRouter(prefix="/api/v1", tags=["integrations"])
QUERY_WAIT = 20.0  # seconds a git query waits for a runner's answer by default
MAX_QUERY_WAIT = 60.0
RECHECK = 1.0  # seconds between store checks while a query waits, besides wake-ups
Seconds = Annotated[float, Query(gt=0, le=MAX_QUERY_WAIT)]
Text = Annotated[str, Query(min_length=1, max_length=500)]


@router.get("/integrations/git/{name}/branches")
async def branches(
    name: str,
    repo: Text,
    request: Request,
    token: AsDeveloper,
    svc: Svc,
    runtime: str | None = None,
    wait: Seconds = QUERY_WAIT,
) -> BranchesOut:
    result, runner = await _ask(svc, request, token, name, runtime, wait, "branches", {"repo": repo})
    found = result.get("branches") or {}
    return BranchesOut(repo=repo, branches=[BranchOut(name=k, sha=v) for k, v in sorted(found.items())], runner=runner)


@router.get("/integrations/git/{name}/file")
async def file(
    name: str,
    repo: Text,
    path: Text,
    request: Request,
    token: AsDeveloper,
    svc: Svc,
    revision: str | None = Query(default=None, max_length=255),
    runtime: str | None = None,
    wait: Seconds = QUERY_WAIT,
) -> FileOut:
    params = {"repo": repo, "path": path, "revision": revision}
    result, runner = await _ask(svc, request, token, name, runtime, wait, "file", params)
    content = base64.b64decode(result.get("content") or "")
    try:
        text, encoding = content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(content).decode(), "base64"
    return FileOut(
        repo=repo,
        path=path,
        revision=result.get("revision") or "",
        size=len(content),
        encoding=encoding,
        content=text,
        runner=runner,
    )


@router.get("/integrations/git/{name}/changed-files")
async def changed_files(
    name: str,
    repo: Text,
    request: Request,
    token: AsDeveloper,
    svc: Svc,
    base: Annotated[str, Query(alias="from", min_length=1, max_length=255)],
    head: Annotated[str, Query(alias="to", min_length=1, max_length=255)],
    runtime: str | None = None,
    wait: Seconds = QUERY_WAIT,
) -> ChangedFilesOut:
    params = {"repo": repo, "base": base, "head": head}
    result, runner = await _ask(svc, request, token, name, runtime, wait, "changed-files", params)
    return ChangedFilesOut(
        repo=repo,
        base=result.get("base") or "",
        head=result.get("head") or "",
        files=list(result.get("files") or []),
        truncated=bool(result.get("truncated")),
        runner=runner,
    )


@router.post("/integrations/cluster/{name}/check")
async def check_cluster(
    name: str,
    request: Request,
    token: AsAdmin,
    svc: Svc,
    runtime: str | None = None,
    wait: Seconds = QUERY_WAIT,
) -> ClusterCheckOut:
    """A kubernetes integration's connection test, made by a runner of the runtime (behind the firewall or not:
    deploy steps reach the cluster from there, so that is where it must answer): the version its API server
    reports, or why it could not be asked."""
    return await cluster_check(svc, request, lambda: svc.as_caller(token), name, runtime, wait)


async def cluster_check(
    svc: Services, request: Request, caller: Caller, name: str, runtime: str | None, wait: float
) -> ClusterCheckOut:
    """A runner's test of kubernetes integration `name`, as the API and the web UI give it."""
    kind = gitqueries.CLUSTER_VERSION
    try:
        result, runner = await ask_runner(svc, request, caller, name, runtime, wait, kind, {}, "cluster")
    except gitqueries.GitQueryFailed as exc:
        return ClusterCheckOut(ok=False, message=exc.message)
    version, platform = result.get("git_version") or "", result.get("platform") or ""
    seen = f"Kubernetes {version}" + (f" ({platform})" if platform else "")
    by = f", asked by runner {runner}" if runner else ""
    return ClusterCheckOut(ok=True, message=f"{seen}{by}", version=version, platform=platform, runner=runner)


async def _ask(
    svc: Services,
    request: Request,
    token: Access,
    name: str,
    runtime: str | None,
    seconds: float,
    kind: GitQueryKind,
    params: dict[str, Any],
) -> tuple[dict[str, Any], str | None]:
    return await ask_runner(svc, request, lambda: svc.as_caller(token), name, runtime, seconds, kind, params)


async def ask_runner(
    svc: Services,
    request: Request,
    caller: Caller,
    name: str,
    runtime: str | None,
    seconds: float,
    kind: GitQueryKind | str,
    params: dict[str, Any],
    integration_kind: str = "git",
) -> tuple[dict[str, Any], str | None]:
    """Stores the query, wakes the runtime's runners and waits for the answer (or raises 503/504/...)."""
    online_since = now() - (svc.settings.poll_timeout + svc.settings.heartbeat_interval + 5)
    async with caller() as (session, who):
        integration = await store.get_integration(session, who, integration_kind, name)
        rt = await gitqueries.pick_runtime(session, who, runtime)
        query = await gitqueries.ask(
            session, who, integration, rt, kind, {"kind": kind, **params}, seconds=seconds, online_since=online_since
        )
        query_id, runtime_id, runtime_name = query.id, rt.id, rt.name
    svc.wakeups.git_query(runtime_id)  # one idle poll of the runtime takes it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with hang_up(request.receive) as gone:
        while True:
            ticket = svc.wakeups.ticket(gitqueries.query_key(query_id))
            async with caller() as (session, who):
                query = await gitqueries.look(session, who, query_id)
                result = gitqueries.outcome(query, runtime_name, seconds)
                runner = await session.get(Runner, query.runner_id) if query.runner_id else None
                if result is not None:
                    return result, runner.name if runner else None
            remaining = deadline - loop.time()
            if remaining <= 0 or gone.done() or svc.wakeups.closing:
                break
            await svc.wakeups.wait(ticket, min(remaining, RECHECK), unless=gone)
    async with svc.tx() as session:
        await gitqueries.expire(session, query_id)
    async with caller() as (session, who):  # the answer may have landed just before expiry
        query = await gitqueries.look(session, who, query_id)
        result = gitqueries.outcome(query, runtime_name, seconds)
        assert result is not None  # expired or answered by now
        runner = await session.get(Runner, query.runner_id) if query.runner_id else None
        return result, runner.name if runner else None
