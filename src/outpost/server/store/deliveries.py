"""Webhook deliveries: every request that names a trigger leaves a row saying what became of it (a build,
filtered by a rule and why, ignored, rejected, or pending until a runner lists the changed files), and the
webhook build a delivery starts. The decision itself is made in `server/deliveries.py`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from outpost.errors import NotFound
from outpost.server.models import Build, Delivery, Integration, Pipeline, Trigger
from outpost.server.security import now
from outpost.server.store import builds, triggers
from outpost.server.store.accounts import Principal
from outpost.server.store.artifacts import DAY
from outpost.triggers.event import GitEvent

STOPPED_WAITING = (
    "the control plane stopped before a runner computed the changed files, so no build "
    "(push again or run the pipeline by hand)"
)


async def remove_old(session: AsyncSession, days: float, *, limit: int = 1000) -> int:
    """Deletes up to `limit` deliveries received more than `days` ago, oldest first, with their bodies; a pending one
    only once nobody will settle it. `days` <= 0 keeps them all. Returns how many went. A provider that sends
    such an old delivery again gets a new build, as for one never seen."""
    if days <= 0:
        return 0
    t = now()
    oldest = (
        select(Delivery.id)
        .where(
            Delivery.received_at < t - days * DAY,
            or_(Delivery.outcome != "pending", Delivery.pending_until.is_(None), Delivery.pending_until < t),
        )
        .order_by(Delivery.received_at)
        .limit(limit)
    )
    ids = list(await session.scalars(oldest))
    if ids:
        await session.execute(delete(Delivery).where(Delivery.id.in_(ids)))
    return len(ids)


async def list_deliveries(
    session: AsyncSession, principal: Principal, trigger_id: str, *, limit: int = 50, before: str | None = None
) -> list[Delivery]:
    """Newest first; `before` (a delivery id) pages on from that delivery. Without their payloads (`headers` says
    whether one was kept)."""
    trigger = await triggers.get_trigger(session, principal, trigger_id)
    await settle_stale_deliveries(session, trigger)
    query = select(Delivery).options(defer(Delivery.payload)).where(Delivery.trigger_id == trigger.id)  # up to 25 MB
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


async def get_delivery(session: AsyncSession, principal: Principal, trigger_id: str, id: str) -> Delivery:
    """One delivery (our id, not the provider's) of one of the account's triggers."""
    trigger = await triggers.get_trigger(session, principal, trigger_id)
    delivery = await session.get(Delivery, id)
    if delivery is None or delivery.trigger_id != trigger.id:
        raise NotFound(f"trigger {trigger_id} has no delivery {id!r}")
    return delivery


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
    payload: bytes | None = None,
    headers: dict[str, str] | None = None,
    redelivery_of: str | None = None,
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
        payload=payload,
        headers=headers,
        redelivery_of=redelivery_of,
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


async def _web_address(session: AsyncSession, trigger: Trigger, pipeline: Pipeline, event: GitEvent) -> str | None:
    """The address of the Git integration of the event's provider the trigger (else the pipeline) names, else the
    account's default one: where its commits and pull requests are shown."""
    names = [n for n in (trigger.git, pipeline.git) if n]
    query = select(Integration).where(Integration.account_id == trigger.account_id, Integration.kind == "git")
    rows = [
        r for r in await session.scalars(query) if r.url and r.provider.removesuffix("-enterprise") == event.provider
    ]
    for row in sorted(
        rows, key=lambda r: (r.name not in names, names.index(r.name) if r.name in names else 0, not r.is_default)
    ):
        if row.name in names or row.is_default:
            return row.url
    return None


async def start_build(
    session: AsyncSession, trigger: Trigger, event: GitEvent, variables: dict[str, str]
) -> tuple[Build, list[Build]]:
    """A webhook build: pipeline < trigger < event variables, the raw payload for `event.json`. Returns the
    build and, under terminationPolicy, the older builds of its branch it ended or asked to stop."""
    pipeline = await session.get_one(Pipeline, trigger.pipeline_id)
    initiator = (event.initiator or trigger.provider or "webhook")[:100]
    build = await builds.create_build(
        session,
        triggers.acting_as(trigger, initiator),
        pipeline,
        variables={**{str(k): str(v) for k, v in trigger.variables.items()}, **variables},
        branch=(event.branch or event.tag or "")[:255] or None,
        sha=event.after[:64] if event.after else None,
        trigger="webhook",
        initiator=initiator,
        trigger_id=trigger.id,
        event=dict(event.payload),
        context=builds.git_context(event, await _web_address(session, trigger, pipeline, event)),
    )
    superseded: list[Build] = []
    if trigger.termination_policy == "terminate-previous-same-branch":
        superseded = await builds.cancel_superseded(session, build)
    return build, superseded
