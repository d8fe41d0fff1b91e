"""The audit log: who changed what, granted or revoked what, answered an approval, cancelled a build or had a
build's secrets handed over, when and from where.

Append-only on purpose: this module writes and reads entries and has no function that changes or removes
one (nor does any other). An entry is written in the same transaction as the change it records, so a change
that is rolled back leaves no entry and a change never happens without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.models import AuditEntry, Build, Runner
from outpost.server.security import now

if TYPE_CHECKING:
    from outpost.server.store.accounts import Principal
    from outpost.wire import RunBuildTask

MAX_PAGE = 1000


async def record(
    session: AsyncSession,
    principal: Principal,
    action: str,
    target: str,
    *,
    installation_wide: bool = False,
    **details: Any,
) -> AuditEntry:
    """An entry of the caller's account, or with `installation_wide` one only the superuser lists."""
    entry = AuditEntry(
        account_id=None if installation_wide else principal.account_id,
        at=now(),
        actor=principal.actor,
        address=principal.address,
        action=action,
        target=target[:300],
        details={k: v for k, v in details.items() if v is not None},
    )
    session.add(entry)
    return entry


async def secrets_read(session: AsyncSession, runner: Runner, build: Build) -> None:
    """A runner was handed a build's decrypted secrets (only their names are written here)."""
    if build.secrets:
        session.add(_handed(runner, build, "secret.read", {"secrets": sorted(build.secrets)}))


async def credentials_read(session: AsyncSession, runner: Runner, build: Build, task: RunBuildTask) -> None:
    """A runner was handed integrations' credentials in clear with a build (names only here; an integration
    whose credential the runner holds itself, `runner_secret`, hands nothing over and is not named)."""
    handed = {
        "git": sorted(name for name, git in task.integrations.items() if git.password),
        "registries": sorted(name for name, registry in task.registries.items() if registry.password),
        "clusters": sorted(name for name, cluster in task.clusters.items() if cluster.token or cluster.client_key_pem),
    }
    if any(handed.values()):
        session.add(_handed(runner, build, "credential.read", handed))


def _handed(runner: Runner, build: Build, action: str, what: dict[str, Any]) -> AuditEntry:
    """An entry for what a runner was handed with a build: no client address (the task rides the runner's poll), so
    the runner is named by id and host."""
    return AuditEntry(
        account_id=build.account_id,
        at=now(),
        actor=f"runner {runner.name} ({runner.id})",
        address=None,
        action=action,
        target=f"build {build.id}",
        details={"pipeline": build.pipeline_name, **what, "host": runner.hostname},
    )


async def entries(
    session: AsyncSession, principal: Principal, *, since: float | None = None, limit: int = 200
) -> list[AuditEntry]:
    """Newest first: the account's entries, and for the superuser also the installation-wide ones."""
    from outpost.server.store.accounts import ADMIN, require

    require(principal, ADMIN)
    mine = AuditEntry.account_id == principal.account_id
    query = select(AuditEntry).where(mine | AuditEntry.account_id.is_(None) if principal.is_superuser else mine)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    rows = await session.scalars(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(min(limit, MAX_PAGE)))
    return list(rows)


async def runner_registered(session: AsyncSession, runner: Runner) -> None:
    """A runner traded a one-time install token for its own token."""
    session.add(
        AuditEntry(
            account_id=runner.account_id,
            at=now(),
            actor=f"install token of runtime {runner.runtime_id}",
            address=None,
            action="runner.register",
            target=f"{runner.name} ({runner.id})",
            details={"host": runner.hostname, "executor": runner.executor},
        )
    )
