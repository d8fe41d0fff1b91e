"""Git queries: questions about a repository (its branches, a file at a revision, the files changed between
two revisions) that only a runner can answer, because only a runner can reach a Git server behind the firewall.

The API stores a query and waits; a runner of the chosen runtime takes it through its open poll (each query is
handed to one runner once), asks the Git server and posts the answer; the API hands the answer back. A query
nobody took or answered in time expires, and a late answer is thrown away.

A kubernetes integration's connection test travels the same way (kind `cluster-version`): the runner asks the
cluster's API server, which only it may be able to reach.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, NotFound, StoreError, TooLarge
from outpost.server.models import GitQuery, Integration, Runner, Runtime
from outpost.server.secrets import SecretBox
from outpost.server.security import new_id, now
from outpost.server.store.accounts import Principal
from outpost.server.store.clusters import cluster_access
from outpost.server.store.integrations import git_access
from outpost.server.store.runtimes import default_runtime, get_runtime
from outpost.wire import ClusterCheckAnswer, ClusterCheckTask, GitQueryAnswer, GitQueryKind, GitQueryTask

CLUSTER_VERSION = "cluster-version"  # the kind of a cluster's connection test

KEEP = 3600.0  # seconds a finished query is kept before it is cleaned up


def query_key(query_id: str) -> str:
    """The wake-up key the asker waits on."""
    return f"gitquery:{query_id}"


class NoRunnerOnline(StoreError):
    status_code = 503


class NoAnswer(StoreError):
    status_code = 504


async def pick_runtime(session: AsyncSession, principal: Principal, name: str | None) -> Runtime:
    return await get_runtime(session, principal, name) if name else await default_runtime(session, principal)


async def ask(
    session: AsyncSession,
    principal: Principal,
    integration: Integration,
    runtime: Runtime,
    kind: GitQueryKind | str,
    params: dict[str, Any],
    *,
    seconds: float,
    online_since: float,
) -> GitQuery:
    """Stores a query for the runners of the runtime; 503 at once if none of them polled since `online_since`."""
    online = await session.scalar(
        select(Runner.id)
        .where(
            Runner.runtime_id == runtime.id,
            Runner.account_id == principal.account_id,
            Runner.revoked_at.is_(None),
            Runner.last_seen_at > online_since,
        )
        .limit(1)
    )
    if online is None:
        raise NoRunnerOnline(
            f"no runner of runtime {runtime.name} is online: start one to answer git queries",
            error="no_runner_online",
            runtime=runtime.name,
        )
    t = now()
    await session.execute(
        delete(GitQuery).where(GitQuery.account_id == principal.account_id, GitQuery.created_at < t - KEEP)
    )
    query = GitQuery(
        id=new_id(),
        account_id=principal.account_id,
        runtime_id=runtime.id,
        integration_id=integration.id,
        kind=kind,
        params=params,
        status="pending",
        created_at=t,
        expires_at=t + seconds,
    )
    session.add(query)
    await session.flush()
    return query


# Built once: a woken poll's look runs it (building it per call cost about as much as running it).
_NEXT_PENDING = (
    select(GitQuery)
    .where(
        GitQuery.runtime_id == bindparam("runtime_id"),
        GitQuery.account_id == bindparam("account_id"),
        GitQuery.status == "pending",
        GitQuery.expires_at > bindparam("now"),
    )
    .order_by(GitQuery.created_at, GitQuery.id)
    .limit(1)
)


async def next_for(session: AsyncSession, runner: Runner, box: SecretBox) -> GitQueryTask | ClusterCheckTask | None:
    """The oldest unexpired query of the runner's runtime nobody took yet, handed to this runner."""
    t = now()
    for _ in range(5):
        query: GitQuery | None = await session.scalar(
            _NEXT_PENDING, {"runtime_id": runner.runtime_id, "account_id": runner.account_id, "now": t}
        )
        if query is None:
            return None
        integration = await session.get(Integration, query.integration_id) if query.integration_id else None
        if integration is None or integration.account_id != runner.account_id:
            _fail(query, "the integration was removed", "failed")
            continue
        query.status, query.runner_id, query.sent_at = "sent", runner.id, t
        if query.kind == CLUSTER_VERSION:
            access = cluster_access(integration, box)
            return ClusterCheckTask(query_id=query.id, access=access, seconds=max(query.expires_at - t, 0.0))
        params = query.params
        return GitQueryTask(
            query_id=query.id,
            query=params["kind"],
            repo=params["repo"],
            access=git_access(integration, box),
            path=params.get("path"),
            revision=params.get("revision"),
            base=params.get("base"),
            head=params.get("head"),
            seconds=max(query.expires_at - t, 0.0),
        )
    return None


async def answer(
    session: AsyncSession, runner: Runner, query_id: str, body: GitQueryAnswer | ClusterCheckAnswer
) -> GitQuery:
    """Records a runner's answer to a query it was handed; 409 if it expired or was not this runner's."""
    query = await session.get(GitQuery, query_id, with_for_update=True)
    if query is None or query.account_id != runner.account_id or query.runner_id != runner.id:
        raise NotFound(f"no git query {query_id!r} was handed to this runner")
    if isinstance(body, ClusterCheckAnswer) != (query.kind == CLUSTER_VERSION):
        raise NotFound(f"query {query_id!r} is a {query.kind} query: answer it at its own route")
    if query.status != "sent":
        raise Conflict(f"git query {query_id} is {query.status}: the answer came too late")
    if body.error is not None:
        _fail(query, body.error, getattr(body, "error_kind", None) or "failed")
    else:
        query.status = "answered"
        query.result = body.model_dump(exclude_none=True)
    query.answered_at = now()
    return query


async def look(session: AsyncSession, principal: Principal, query_id: str) -> GitQuery:
    query = await session.get(GitQuery, query_id, populate_existing=True)
    if query is None or query.account_id != principal.account_id:
        raise NotFound(f"no git query {query_id!r} in this account")
    return query


def outcome(query: GitQuery, runtime: str, seconds: float) -> dict[str, Any] | None:
    """The answer's fields, None while nobody answered, or raises the error the asker gets."""
    if query.status == "answered":
        return dict(query.result or {})
    if query.status == "failed":
        kind = (query.result or {}).get("error_kind", "failed")
        message = query.error or "the runner could not answer"
        if kind == "not_found":
            raise NotFound(message, error="not_found_in_repository")
        if kind == "too_large":
            raise TooLarge(message)
        raise GitQueryFailed(message, error="git_failed")
    if query.status == "expired":
        raise NoAnswer(f"no runner of runtime {runtime} answered within {seconds:g} s", error="no_answer")
    return None


async def expire(session: AsyncSession, query_id: str) -> None:
    """Nobody answered in time: a runner still working on it will have its answer refused."""
    query = await session.get(GitQuery, query_id, with_for_update=True, populate_existing=True)
    if query is not None and query.status in ("pending", "sent"):
        query.status = "expired"


class GitQueryFailed(StoreError):
    status_code = 502


def _fail(query: GitQuery, message: str, kind: str) -> None:
    query.status = "failed"
    query.error = message
    query.result = {"error_kind": kind}
