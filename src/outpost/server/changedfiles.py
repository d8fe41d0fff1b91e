"""The changed files of a webhook event whose payload does not list them all, computed by a runner.

The control plane never reads a repository: it stores a `changed-files` git query for a runner of the
pipeline's runtime (in the webhook's own transaction, see `ask`) and waits for the answer (`wait`) in a
background task, so the provider gets its answer at once (docs/triggers.md, "Modified files").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import StoreError
from outpost.server.models import Integration, Pipeline, Runtime, Trigger
from outpost.server.security import now
from outpost.server.services import Services
from outpost.server.store import gitqueries, integrations
from outpost.server.store.accounts import Principal
from outpost.settings import ServerSettings
from outpost.triggers.event import GitEvent

MAX_WAIT = 60.0  # seconds, whatever the settings say: a pending delivery should not stay pending for long
GRACE = 15.0  # past the wait, a delivery still pending is stale (its waiter is gone)
RECHECK = 1.0  # seconds between store checks while waiting, besides wake-ups
DEFAULT_BRANCH = "HEAD"  # what a runner fetches as the repository's default branch
NO_INTEGRATION = "no Git integration to compute the changed files with; add one or give the trigger --git"


class Interrupted(Exception):
    """The control plane is stopping while a runner works: the delivery stays pending until found stale."""


@dataclass(frozen=True)
class Asked:
    """A stored changed-files query and whom it waits for."""

    query_id: str
    account_id: str
    runtime_id: str
    runtime_name: str
    seconds: float

    @property
    def reason(self) -> str:
        return f"the changed files are being computed on a runner of runtime {self.runtime_name}"


@dataclass(frozen=True)
class ChangedFiles:
    files: list[str]
    truncated: bool  # the runner listed only the first MAX_CHANGED paths


def wait_seconds(settings: ServerSettings) -> float:
    return min(max(settings.changed_files_wait, 1.0), MAX_WAIT)


def revisions(event: GitEvent) -> tuple[str, str] | str:
    """(base, head) to compare, or why the event has none. A pull request compares its head commit with the
    target branch; a new branch or tag (no `before`) with the repository's default branch. Both are tree
    diffs: what the target gained since the branch left it counts too."""
    if not event.after:
        return "the event names no commit to compare"
    if event.event.startswith("pullrequest."):
        if not event.pr_target_branch:
            return "the pull request names no target branch"
        return event.pr_target_branch, event.after
    return event.before or DEFAULT_BRANCH, event.after


async def integration_for(session: AsyncSession, trigger: Trigger) -> Integration | str:
    """The trigger's git integration, else its pipeline's, else the account's default one; or why none."""
    if trigger.git:
        named = await integrations.find_integration(session, trigger.account_id, "git", trigger.git)
        return named or f"the trigger's git integration {trigger.git!r} no longer exists; add it or change --git"
    pipeline = await session.get_one(Pipeline, trigger.pipeline_id)
    if pipeline.git:
        found = await integrations.find_integration(session, trigger.account_id, "git", pipeline.git)
        if found is not None:
            return found
    return await integrations.default_integration(session, trigger.account_id, "git") or NO_INTEGRATION


async def ask(session: AsyncSession, settings: ServerSettings, trigger: Trigger, event: GitEvent) -> Asked | str:
    """Stores the query for the runners of the pipeline's runtime (wake them after the commit), or says
    why it cannot: no revisions to compare, no git integration, no runner online."""
    compared = revisions(event)
    if isinstance(compared, str):
        return compared
    integration = await integration_for(session, trigger)
    if isinstance(integration, str):
        return integration
    pipeline = await session.get_one(Pipeline, trigger.pipeline_id)
    runtime = await session.get_one(Runtime, pipeline.runtime_id)
    seconds = wait_seconds(settings)
    base, head = compared
    params = {"kind": "changed-files", "repo": trigger.repo, "base": base, "head": head}
    online_since = now() - (settings.poll_timeout + settings.heartbeat_interval + 5)  # as the git query API
    try:
        query = await gitqueries.ask(
            session, _principal(trigger.account_id), integration, runtime, "changed-files", params,
            seconds=seconds, online_since=online_since,
        )  # fmt: skip
    except gitqueries.NoRunnerOnline as exc:
        return exc.message
    return Asked(query.id, trigger.account_id, runtime.id, runtime.name, seconds)


async def wait(svc: Services, asked: Asked) -> ChangedFiles:
    """The runner's answer. Raises the StoreError the query ended with (NoAnswer when nobody answered in
    time, GitQueryFailed, NotFound), or Interrupted when the control plane is stopping."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + asked.seconds
    while True:
        ticket = svc.wakeups.ticket(gitqueries.query_key(asked.query_id))
        result = await _look(svc, asked)
        if result is not None:
            return _files(result)
        remaining = deadline - loop.time()
        if svc.wakeups.closing:
            raise Interrupted
        if remaining <= 0:
            break
        await svc.wakeups.wait(ticket, min(remaining, RECHECK))
    async with svc.tx() as session:
        await gitqueries.expire(session, asked.query_id)
    result = await _look(svc, asked)  # the answer may have landed just before expiry
    assert result is not None  # expired or answered by now
    return _files(result)


def failure(exc: StoreError) -> str:
    """The reason a delivery is filtered when its changed files could not be computed."""
    if isinstance(exc, gitqueries.NoAnswer):
        return exc.message
    return f"a runner could not compute the changed files: {exc.message}"


async def _look(svc: Services, asked: Asked) -> dict[str, Any] | None:
    async with svc.tx() as session:
        query = await gitqueries.look(session, _principal(asked.account_id), asked.query_id)
        return gitqueries.outcome(query, asked.runtime_name, asked.seconds)


def _files(result: dict[str, Any]) -> ChangedFiles:
    return ChangedFiles([str(path) for path in result.get("files") or []], bool(result.get("truncated")))


def _principal(account_id: str) -> Principal:
    return Principal(account_id, "", "", "webhook", False)
