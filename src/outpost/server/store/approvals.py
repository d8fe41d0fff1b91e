"""Approval answers for pending-approval steps: given through the API, delivered to the runner.

Who may answer is the pipeline's rule: at least its `approval_role` (developer unless set), and, with
`approval_requires_other`, never the person or token that started the build. Every answer is audited.

The runner learns an answer at once through its open poll (each answer handed out once), and again
with every heartbeat while the step still waits, so an answer is never lost between the two.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Forbidden, Invalid
from outpost.server.models import Build, Pipeline, Runner, Step
from outpost.server.security import now
from outpost.server.store import audit
from outpost.server.store.accounts import DEVELOPER, Principal, rank
from outpost.server.store.builds import LIVE_STATUSES, find_step, get_build
from outpost.wire import ApprovalDecision

DECISIONS = ("approved", "denied")


async def decide(session: AsyncSession, principal: Principal, build_id: str, step_name: str, decision: str) -> Step:
    if decision not in DECISIONS:
        raise Invalid(f"an approval answer is approved or denied, not {decision!r}")
    build = await get_build(session, principal, build_id)
    if build.status in ("queued", "claimed"):
        raise Conflict(f"build {build_id} has not started yet ({build.status})")
    step = await find_step(session, build, step_name)
    if step.type != "pending-approval":
        raise Conflict(f"step {step_name} is not an approval step")
    if step.decision is not None:
        raise Conflict(f"step {step_name} was already {step.decision} by {step.decided_by or 'someone'}")
    if build.status not in LIVE_STATUSES:
        raise Conflict(f"build {build_id} is not running ({build.status})")
    if step.status != "pending-approval":
        raise Conflict(f"step {step_name} is not waiting for approval ({step.status})")
    await check_approver(session, principal, build)
    step.decision = decision
    step.decided_by = principal.token_name or principal.account_name
    step.decided_at = now()
    await audit.record(session, principal, f"approval.{decision}", f"build {build.id} step {step_name}")
    return step


async def check_approver(session: AsyncSession, principal: Principal, build: Build) -> None:
    """403 with the reason when the pipeline's rules keep this caller from answering."""
    pipeline = await session.get(Pipeline, build.pipeline_id)
    role = pipeline.approval_role if pipeline else DEVELOPER
    if rank(principal.role) < rank(role):
        raise Forbidden(
            f"approvals of pipeline {build.pipeline_name} need the {role} role; your {principal.kind} has "
            f"{principal.role}",
            error="role_required",
            needs=role,
        )
    if pipeline and pipeline.approval_requires_other and build.initiator_id == principal.identity:
        raise Forbidden(
            f"pipeline {build.pipeline_name} needs someone other than who started build {build.id} to approve it",
            error="approver_is_initiator",
        )


def _waiting() -> tuple[Any, ...]:
    """A running build's step that waits for a person: no answer given yet."""
    return (
        Build.status.in_(LIVE_STATUSES),
        Step.status == "pending-approval",
        Step.type == "pending-approval",
        Step.decision.is_(None),
    )


async def waiting_for_approval(session: AsyncSession, build_ids: list[str]) -> set[str]:
    """Which of these builds wait for an approval answer."""
    if not build_ids:
        return set()
    rows = await session.scalars(
        select(Step.build_id).join(Build, Build.id == Step.build_id).where(Build.id.in_(build_ids), *_waiting())
    )
    return set(rows)


async def list_waiting(session: AsyncSession, principal: Principal, *, pipeline: str | None, limit: int) -> list[Build]:
    """The account's builds that wait for an approval answer, newest first."""
    query = select(Build).where(
        Build.account_id == principal.account_id,
        Build.id.in_(select(Step.build_id).join(Build, Build.id == Step.build_id).where(*_waiting())),
    )
    if principal.pipeline_id:
        query = query.where(Build.pipeline_id == principal.pipeline_id)
    if pipeline:
        query = query.where(Build.pipeline_name == pipeline)
    return list(await session.scalars(query.order_by(Build.created_at.desc(), Build.id).limit(limit)))


def who_may_answer(pipeline: Pipeline | None, build: Build) -> str:
    """The pipeline's approval rule in words, for pages."""
    role = pipeline.approval_role if pipeline else DEVELOPER
    who = "an admin" if role == "admin" else f"anyone with the {role} role or above"
    if pipeline and pipeline.approval_requires_other and build.initiator:
        who += f", except {build.initiator} who started it"
    return who


async def undelivered(
    session: AsyncSession, runner: Runner, build_ids: list[str]
) -> tuple[str, ApprovalDecision] | None:
    """One answer the runner has not been handed yet, for the builds it says it runs."""
    if not build_ids:
        return None
    row = (
        await session.execute(
            select(Step)
            .join(Build, Build.id == Step.build_id)
            .where(
                Build.id.in_(build_ids),
                Build.runner_id == runner.id,
                Build.status.in_(LIVE_STATUSES),
                Step.status == "pending-approval",
                Step.decision.is_not(None),
                Step.decision_sent_at.is_(None),
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    row.decision_sent_at = now()
    return row.build_id, _decision(row)


async def waiting_answers(session: AsyncSession, build: Build) -> list[ApprovalDecision]:
    """Every answer given to a step of this build that still waits for it."""
    rows = await session.scalars(
        select(Step).where(Step.build_id == build.id, Step.status == "pending-approval", Step.decision.is_not(None))
    )
    return [_decision(s) for s in rows]


def _decision(step: Step) -> ApprovalDecision:
    answer = "approved" if step.decision == "approved" else "denied"
    return ApprovalDecision(step=step.name, decision=answer, by=step.decided_by or "")
