"""Triggers (a Git provider's webhook or a cron schedule that starts a pipeline) and webhook deliveries.

A git trigger's secret is stored sealed by the server's SecretBox, not hashed: verifying a provider's
HMAC needs the secret itself. Every delivery, accepted or not, leaves a row that says what became of it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Invalid, NotFound, OutpostError
from outpost.server.cron import CronExpression
from outpost.server.models import Build, Delivery, Pipeline, Trigger
from outpost.server.security import new_id, now
from outpost.server.store import audit, builds, integrations
from outpost.server.store.accounts import Principal
from outpost.server.store.pipelines import check_variables, get_pipeline
from outpost.triggers import filters
from outpost.triggers.event import PROVIDERS, GitEvent, TriggerRules

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


STOPPED_WAITING = (
    "the control plane stopped before a runner computed the changed files, so no build "
    "(push again or run the pipeline by hand)"
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


async def list_deliveries(
    session: AsyncSession, principal: Principal, trigger_id: str, *, limit: int = 50, before: str | None = None
) -> list[Delivery]:
    """Newest first; `before` (a delivery id) pages on from that delivery."""
    trigger = await get_trigger(session, principal, trigger_id)
    await settle_stale_deliveries(session, trigger)
    query = select(Delivery).where(Delivery.trigger_id == trigger.id)
    if before is not None:
        anchor = await session.get(Delivery, before)
        if anchor is None or anchor.trigger_id != trigger.id:
            raise NotFound(f"trigger {trigger_id} has no delivery {before!r}")
        query = query.where(
            or_(
                Delivery.received_at < anchor.received_at,
                (Delivery.received_at == anchor.received_at) & (Delivery.id < anchor.id),
            )
        )
    rows = await session.scalars(query.order_by(Delivery.received_at.desc(), Delivery.id.desc()).limit(limit))
    return list(rows)


# --- webhooks ------------------------------------------------------------------------------------


async def webhook_trigger(session: AsyncSession, trigger_id: str) -> Trigger:
    """The git trigger a webhook names. Not scoped to an account: the provider's signature is the proof."""
    trigger = await session.get(Trigger, trigger_id)
    if trigger is None or trigger.kind != "git":
        raise NotFound(f"no webhook trigger {trigger_id!r}")
    return trigger


async def find_delivery(session: AsyncSession, trigger: Trigger, delivery_id: str) -> Delivery | None:
    row: Delivery | None = await session.scalar(
        select(Delivery).where(Delivery.trigger_id == trigger.id, Delivery.delivery_id == delivery_id)
    )
    return row


async def record_delivery(
    session: AsyncSession,
    trigger: Trigger,
    *,
    id: str,
    received_at: float,
    event: str | None,
    delivery_id: str | None,
    outcome: str,
    status_code: int,
    answer: dict[str, Any],
    rule: str | None = None,
    reason: str | None = None,
    build_id: str | None = None,
    pending_until: float | None = None,
) -> Delivery:
    delivery = Delivery(
        id=id,
        account_id=trigger.account_id,
        trigger_id=trigger.id,
        received_at=received_at,
        provider=trigger.provider or "",
        event=event[:100] if event else None,
        delivery_id=delivery_id[:255] if delivery_id else None,
        outcome=outcome,
        rule=rule,
        reason=reason,
        build_id=build_id,
        status_code=status_code,
        answer=answer,
        pending_until=pending_until,
    )
    session.add(delivery)
    await session.flush()
    return delivery


async def settle_delivery(
    session: AsyncSession,
    delivery_id: str,
    *,
    outcome: str,
    status_code: int,
    answer: dict[str, Any],
    rule: str | None,
    reason: str | None,
    build_id: str | None = None,
) -> bool:
    """Gives a pending delivery its outcome. False when it is pending no more (settled as stale, or removed
    with its trigger): the caller rolls back whatever it made for it."""
    changed = await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.outcome == "pending")
        .values(
            outcome=outcome,
            status_code=status_code,
            answer=answer,
            rule=rule,
            reason=reason,
            build_id=build_id,
            pending_until=None,
        )
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


async def settle_stale_deliveries(session: AsyncSession, trigger: Trigger) -> None:
    """Pending deliveries whose waiter is gone (the control plane stopped meanwhile) become filtered."""
    stale = await session.scalars(
        select(Delivery).where(
            Delivery.pending_until < now(), Delivery.trigger_id == trigger.id, Delivery.outcome == "pending"
        )
    )
    for delivery in list(stale):
        answer = {**delivery.answer, "outcome": "filtered", "reason": STOPPED_WAITING}
        await settle_delivery(
            session,
            delivery.id,
            outcome="filtered",
            status_code=202,
            answer=answer,
            rule="files",
            reason=STOPPED_WAITING,
        )


def _acting_as(trigger: Trigger, initiator: str) -> Principal:
    return Principal(trigger.account_id, "", "", initiator, False)


async def start_build(
    session: AsyncSession, trigger: Trigger, event: GitEvent, variables: dict[str, str]
) -> tuple[Build, list[Build]]:
    """A webhook build: pipeline < trigger < event variables, the raw payload for `event.json`. Returns the
    build and, under terminationPolicy, the older builds of its branch it ended or asked to stop."""
    pipeline = await session.get_one(Pipeline, trigger.pipeline_id)
    initiator = (event.initiator or trigger.provider or "webhook")[:100]
    build = await builds.create_build(
        session,
        _acting_as(trigger, initiator),
        pipeline,
        variables={**{str(k): str(v) for k, v in trigger.variables.items()}, **variables},
        branch=(event.branch or event.tag or "")[:255] or None,
        sha=event.after[:64] if event.after else None,
        trigger="webhook",
        initiator=initiator,
        trigger_id=trigger.id,
        event=dict(event.payload),
    )
    superseded: list[Build] = []
    if trigger.termination_policy == "terminate-previous-same-branch":
        superseded = await builds.cancel_superseded(session, build)
    return build, superseded


# --- cron ----------------------------------------------------------------------------------------


async def fire_cron(session: AsyncSession, minute: float) -> list[Build]:
    """Starts a build for every enabled cron trigger due in `minute` (its first second, UTC) that has not
    fired for it yet. The conditional update of last_fired_at makes a minute fire once, whatever the
    number of restarts or control-plane processes."""
    at = datetime.fromtimestamp(minute, UTC)
    due = await session.scalars(
        select(Trigger).where(
            Trigger.kind == "cron",
            Trigger.disabled.is_(False),
            or_(Trigger.last_fired_at.is_(None), Trigger.last_fired_at < minute),
        )
    )
    started = []
    for trigger in list(due):
        if not CronExpression.parse(trigger.cron or "").matches(at):
            continue
        claimed = await session.execute(
            update(Trigger)
            .where(Trigger.id == trigger.id, or_(Trigger.last_fired_at.is_(None), Trigger.last_fired_at < minute))
            .values(last_fired_at=minute)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        started.append(await _cron_build(session, trigger, at))
    return started


async def _cron_build(session: AsyncSession, trigger: Trigger, at: datetime) -> Build:
    pipeline = await session.get_one(Pipeline, trigger.pipeline_id)
    variables = {str(k): str(v) for k, v in trigger.variables.items()}
    variables["EVENT_TIMESTAMP"] = at.isoformat().replace("+00:00", "Z")
    variables["EVENT_MESSAGE"] = trigger.message or ""
    if trigger.branch:
        variables["CF_BRANCH"] = trigger.branch
    return await builds.create_build(
        session,
        _acting_as(trigger, "cron"),
        pipeline,
        variables=variables,
        branch=trigger.branch,
        trigger="cron",
        initiator="cron",
        trigger_id=trigger.id,
    )
