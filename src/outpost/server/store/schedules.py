"""Cron triggers firing: each minute, every enabled cron trigger due in it starts one build, exactly once
(the schedule's expression language is `server/cron.py`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.cron import CronExpression
from outpost.server.models import Build, Pipeline, Trigger
from outpost.server.store import builds, triggers


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
        triggers.acting_as(trigger, "cron"),
        pipeline,
        variables=variables,
        branch=trigger.branch,
        trigger="cron",
        initiator="cron",
        trigger_id=trigger.id,
    )
