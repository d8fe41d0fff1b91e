"""Triggers: a Git provider's webhook or a cron schedule that starts a pipeline, and their rules.

A git trigger's secret is stored sealed by the server's SecretBox, not hashed: verifying a provider's
HMAC needs the secret itself. What a webhook brought is in `deliveries`; when a cron trigger fires, in
`schedules`.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Invalid, NotFound, OutpostError
from outpost.server.cron import CronExpression
from outpost.server.models import Delivery, Pipeline, Trigger
from outpost.server.security import new_id, now
from outpost.server.store import audit, integrations
from outpost.server.store.accounts import Principal
from outpost.server.store.pipelines import check_variables, get_pipeline
from outpost.triggers import filters
from outpost.triggers.event import PROVIDERS, TriggerRules

KINDS = ("git", "cron")
TERMINATION_POLICIES = ("none", "terminate-previous-same-branch")
EVENTS = frozenset(
    {
        "push",
        "push.heads",
        "push.tags",
        "push.newBranch",
        "push.deleteBranch",
        "pullrequest",
        "pullrequest.opened",
        "pullrequest.closed",
        "pullrequest.reopened",
        "pullrequest.edited",
        "pullrequest.synchronize",
        "pullrequest.labeled",
        "pullrequest.commentAdded",
        "pullrequest.merged",
        "pullrequest.unmerged-closed",
        "release",
    }
)
REPO = re.compile(r"[^/\s]+(/[^/\s]+)+")  # owner/name; GitLab subgroups add levels
# What a caller may set; everything else (ids, secret, times) the store owns.
SETTABLE = frozenset(
    {
        "name",
        "kind",
        "provider",
        "repo",
        "events",
        "branch_regex",
        "pr_target_regex",
        "comment_regex",
        "modified_files_glob",
        "git",
        "allow_fork_events",
        "variables",
        "disabled",
        "concurrency",
        "termination_policy",
        "cron",
        "branch",
        "message",
    }
)


REQUIRED = frozenset({"kind", "events", "allow_fork_events", "variables", "disabled", "termination_policy"})


def check_trigger(trigger: Trigger) -> None:
    """Raises Invalid with the reason when the trigger's settings make no sense."""
    if trigger.kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    if trigger.termination_policy not in TERMINATION_POLICIES:
        raise Invalid(f"termination_policy must be one of {', '.join(TERMINATION_POLICIES)}")
    if trigger.concurrency is not None and trigger.concurrency < 1:
        raise Invalid("concurrency must be at least 1 (or unset for no limit)")
    check_variables({str(k): str(v) for k, v in trigger.variables.items()})
    if trigger.kind == "cron":
        if not trigger.cron:
            raise Invalid("a cron trigger needs a cron expression")
        CronExpression.parse(trigger.cron)
        if trigger.git:
            raise Invalid("a cron trigger has no git integration (--git is for git triggers)")
        return
    if trigger.cron:
        raise Invalid("a git trigger has no cron expression")
    if trigger.provider not in PROVIDERS:
        raise Invalid(f"provider must be one of {', '.join(PROVIDERS)}")
    if not trigger.repo or not REPO.fullmatch(trigger.repo):
        raise Invalid(f"repo {trigger.repo!r} must be OWNER/NAME")
    if not trigger.events:
        raise Invalid("a git trigger needs at least one event (push, pullrequest, ...)")
    unknown = [e for e in trigger.events if e not in EVENTS and not _is_release(e)]
    if unknown:
        raise Invalid(f"unknown event(s): {', '.join(unknown)}; known: {', '.join(sorted(EVENTS))}, release.*")
    for field in ("branch_regex", "pr_target_regex", "comment_regex"):
        value = getattr(trigger, field)
        if value:
            try:
                filters.parse_regex(value)
            except OutpostError as exc:
                raise Invalid(f"{field}: {exc}") from None
    if trigger.modified_files_glob:
        try:
            filters.check_glob(trigger.modified_files_glob)
        except OutpostError as exc:
            raise Invalid(f"modified_files_glob: {exc}") from None


async def _check_git(session: AsyncSession, trigger: Trigger) -> None:
    """The integration a git trigger names must exist (it computes changed files for modified_files_glob)."""
    if trigger.git and await integrations.find_integration(session, trigger.account_id, "git", trigger.git) is None:
        raise Invalid(f"git: no git integration {trigger.git!r} in this account (outpost integration add git ...)")


def _is_release(event: str) -> bool:
    kind, dot, action = event.partition(".")
    return kind == "release" and bool(dot) and bool(action)


def _default_name(trigger: Trigger) -> str:
    if trigger.kind == "cron":
        return f"cron {trigger.cron}"
    return f"{trigger.provider} {trigger.repo}"


def rules_of(trigger: Trigger) -> TriggerRules:
    return TriggerRules(
        provider=trigger.provider,  # type: ignore[arg-type]  # checked on create: one of PROVIDERS
        repo=trigger.repo or "",
        events=list(trigger.events),
        branch_regex=trigger.branch_regex,
        pr_target_regex=trigger.pr_target_regex,
        comment_regex=trigger.comment_regex,
        modified_files_glob=trigger.modified_files_glob,
        allow_fork_events=trigger.allow_fork_events,
        disabled=trigger.disabled,
    )


# --- the user's side ---------------------------------------------------------------------------


async def create_trigger(
    session: AsyncSession,
    principal: Principal,
    pipeline_name: str,
    settings: dict[str, Any],
    *,
    sealed_secret: str | None,
) -> Trigger:
    """`settings` holds SETTABLE fields; `sealed_secret` is the webhook secret already sealed by the caller."""
    pipeline = await get_pipeline(session, principal, pipeline_name)
    t = now()
    trigger = Trigger(
        id=new_id(),
        account_id=principal.account_id,
        pipeline_id=pipeline.id,
        name="",
        kind="git",
        events=[],
        allow_fork_events=False,
        variables={},
        disabled=False,
        termination_policy="none",
        created_at=t,
        updated_at=t,
    )
    _apply(trigger, settings)
    trigger.name = trigger.name or _default_name(trigger)
    check_trigger(trigger)
    await _check_git(session, trigger)
    trigger.secret = sealed_secret if trigger.kind == "git" else None
    session.add(trigger)
    await session.flush()
    await audit.record(session, principal, "trigger.create", f"{trigger.name} ({trigger.id})", pipeline=pipeline_name)
    return trigger


def _apply(trigger: Trigger, settings: dict[str, Any]) -> None:
    unknown = set(settings) - SETTABLE
    if unknown:
        raise Invalid(f"unknown trigger setting(s): {', '.join(sorted(unknown))}")
    for key, value in settings.items():
        if value is None and key in REQUIRED:
            raise Invalid(f"{key} cannot be null")
        setattr(trigger, key, "" if key == "name" and value is None else value)


async def get_trigger(session: AsyncSession, principal: Principal, trigger_id: str) -> Trigger:
    trigger = await session.get(Trigger, trigger_id)
    if trigger is None or trigger.account_id != principal.account_id:
        raise NotFound(f"no trigger {trigger_id!r} in this account")
    return trigger


async def list_triggers(
    session: AsyncSession, principal: Principal, pipeline: str | None = None
) -> list[tuple[Trigger, str]]:
    """The account's triggers (of one pipeline, if named), each with its pipeline's name."""
    query = (
        select(Trigger, Pipeline.name)
        .join(Pipeline, Pipeline.id == Trigger.pipeline_id)
        .where(Trigger.account_id == principal.account_id)
    )
    if pipeline is not None:
        query = query.where(Pipeline.name == (await get_pipeline(session, principal, pipeline)).name)
    rows = await session.execute(query.order_by(Pipeline.name, Trigger.created_at, Trigger.id))
    return [(trigger, name) for trigger, name in rows]


async def pipeline_name(session: AsyncSession, trigger: Trigger) -> str:
    return (await session.get_one(Pipeline, trigger.pipeline_id)).name


async def update_trigger(
    session: AsyncSession, principal: Principal, trigger_id: str, changes: dict[str, Any]
) -> Trigger:
    trigger = await get_trigger(session, principal, trigger_id)
    if "kind" in changes and changes["kind"] != trigger.kind:
        raise Invalid("a trigger's kind cannot change; remove it and add another")
    _apply(trigger, changes)
    trigger.name = trigger.name or _default_name(trigger)
    check_trigger(trigger)  # raising rolls the transaction back: nothing changes
    if "git" in changes:
        await _check_git(session, trigger)
    trigger.updated_at = now()
    await audit.record(session, principal, "trigger.update", f"{trigger.name} ({trigger.id})", changed=sorted(changes))
    return trigger


def sealed_secret(trigger: Trigger) -> str:
    if trigger.kind != "git" or not trigger.secret:
        raise Invalid("only git triggers have a webhook secret")
    return trigger.secret


async def set_secret(session: AsyncSession, principal: Principal, trigger_id: str, sealed_secret: str) -> Trigger:
    trigger = await get_trigger(session, principal, trigger_id)
    if trigger.kind != "git":
        raise Invalid("only git triggers have a webhook secret")
    trigger.secret = sealed_secret
    trigger.updated_at = now()
    await audit.record(session, principal, "trigger.rotate_secret", f"{trigger.name} ({trigger.id})")
    return trigger


async def remove_trigger(session: AsyncSession, principal: Principal, trigger_id: str) -> Trigger:
    """Removes the trigger and its deliveries; its builds stay."""
    trigger = await get_trigger(session, principal, trigger_id)
    await session.execute(delete(Delivery).where(Delivery.trigger_id == trigger.id))
    await session.delete(trigger)
    await session.flush()
    await audit.record(session, principal, "trigger.remove", f"{trigger.name} ({trigger.id})")
    return trigger


async def webhook_trigger(session: AsyncSession, trigger_id: str) -> Trigger:
    """The git trigger a webhook names. Not scoped to an account: the provider's signature is the proof."""
    trigger = await session.get(Trigger, trigger_id)
    if trigger is None or trigger.kind != "git":
        raise NotFound(f"no webhook trigger {trigger_id!r}")
    return trigger


def acting_as(trigger: Trigger, initiator: str) -> Principal:
    """The principal a trigger's build is created as: the trigger's account, named for what started it."""
    return Principal(trigger.account_id, "", "", initiator, False)
