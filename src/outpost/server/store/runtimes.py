"""Runtimes (named groups of runners), their one-time install tokens, and registered runners."""

from __future__ import annotations

import re

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid, NotFound, Unauthorized
from outpost.server.models import Account, Build, InstallToken, Runner, Runtime
from outpost.server.security import INSTALL_TOKEN, RUNNER_TOKEN, new_id, new_token, now, token_hash
from outpost.server.store import audit
from outpost.server.store.accounts import Principal
from outpost.wire import RegisterRequest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
INSTALL_TOKEN_TTL = 7 * 24 * 3600.0
# A build a runner holds: store.builds.LIVE_STATUSES (that module imports this one, so not the other way).
HELD = ("claimed", "running")


def check_name(kind: str, name: str) -> None:
    if not NAME.match(name):
        raise Invalid(f"{kind} name {name!r} must be 1-100 letters, digits, '.', '_' or '-', starting alphanumeric")


async def create_runtime(session: AsyncSession, principal: Principal, name: str) -> Runtime:
    check_name("runtime", name)
    if await find_runtime(session, principal.account_id, name) is not None:
        raise Conflict(f"runtime {name!r} already exists")
    existing = await session.scalar(
        select(func.count()).select_from(Runtime).where(Runtime.account_id == principal.account_id)
    )
    runtime = Runtime(
        id=new_id(), account_id=principal.account_id, name=name, is_default=not existing, created_at=now()
    )
    session.add(runtime)
    await session.flush()
    await audit.record(session, principal, "runtime.create", name)
    return runtime


async def find_runtime(session: AsyncSession, account_id: str, name: str) -> Runtime | None:
    result: Runtime | None = await session.scalar(
        select(Runtime).where(Runtime.account_id == account_id, Runtime.name == name)
    )
    return result


async def get_runtime(session: AsyncSession, principal: Principal, name: str) -> Runtime:
    runtime = await find_runtime(session, principal.account_id, name)
    if runtime is None:
        raise NotFound(f"no runtime {name!r} in this account")
    return runtime


async def default_runtime(session: AsyncSession, principal: Principal) -> Runtime:
    runtime: Runtime | None = await session.scalar(
        select(Runtime).where(Runtime.account_id == principal.account_id, Runtime.is_default.is_(True))
    )
    if runtime is None:
        raise Invalid("this account has no runtime yet: create one with `outpost runtime create NAME`")
    return runtime


async def list_runtimes(session: AsyncSession, principal: Principal) -> list[Runtime]:
    rows = await session.scalars(
        select(Runtime).where(Runtime.account_id == principal.account_id).order_by(Runtime.name)
    )
    return list(rows)


async def create_install_token(session: AsyncSession, runtime: Runtime) -> str:
    token = new_token(INSTALL_TOKEN)
    t = now()
    session.add(
        InstallToken(
            id=new_id(),
            account_id=runtime.account_id,
            runtime_id=runtime.id,
            token_hash=token_hash(token),
            created_at=t,
            expires_at=t + INSTALL_TOKEN_TTL,
        )
    )
    await session.flush()
    return token


async def register_runner(session: AsyncSession, request: RegisterRequest) -> tuple[Runner, str, Runtime, Account]:
    """Exchanges a one-time install token for a runner and its long-lived token."""
    t = now()
    install = await session.scalar(
        select(InstallToken).where(InstallToken.token_hash == token_hash(request.install_token))
    )
    if install is None or install.used_at is not None or install.expires_at < t:
        raise Unauthorized("unknown, used or expired install token")
    token = new_token(RUNNER_TOKEN)
    runner = Runner(
        id=new_id(),
        account_id=install.account_id,
        runtime_id=install.runtime_id,
        name=request.name,
        token_hash=token_hash(token),
        version=request.version,
        executor=request.executor,
        concurrency=request.concurrency,
        hostname=request.hostname,
        created_at=t,
        last_seen_at=t,
    )
    # Spend the token atomically: of two registrations racing with it, one wins.
    spent = await session.execute(
        update(InstallToken)
        .where(InstallToken.id == install.id, InstallToken.used_at.is_(None))
        .values(used_at=t, runner_id=runner.id)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise Unauthorized("unknown, used or expired install token")
    session.add(runner)
    await session.flush()
    await audit.runner_registered(session, runner)
    runtime = await session.get_one(Runtime, install.runtime_id)
    account = await session.get_one(Account, install.account_id)
    return runner, token, runtime, account


# Built once: every poll renewal authenticates its runner with it (building it per call cost more than running it).
_BY_TOKEN = select(Runner).where(Runner.token_hash == bindparam("token_hash"))


async def authenticate_runner(session: AsyncSession, token: str) -> Runner:
    runner: Runner | None = await session.scalar(_BY_TOKEN, {"token_hash": token_hash(token)})
    if runner is None or runner.revoked_at is not None:
        raise Unauthorized("unknown or revoked runner token")
    return runner


async def list_runners(session: AsyncSession, principal: Principal, runtime: Runtime | None = None) -> list[Runner]:
    query = select(Runner).where(Runner.account_id == principal.account_id, Runner.revoked_at.is_(None))
    if runtime is not None:
        query = query.where(Runner.runtime_id == runtime.id)
    return list(await session.scalars(query.order_by(Runner.created_at)))


async def has_online_runner(session: AsyncSession, principal: Principal, runtime_id: str, online_since: float) -> bool:
    """Whether a runner of the runtime that takes builds (not revoked, not drained) was seen since `online_since`:
    one indexed look however many runners the runtime has (a build request asks this every time)."""
    found = await session.scalar(
        select(Runner.id)
        .where(
            Runner.runtime_id == runtime_id,
            Runner.account_id == principal.account_id,
            Runner.revoked_at.is_(None),
            Runner.drained_at.is_(None),
            Runner.last_seen_at > online_since,
        )
        .limit(1)
    )
    return found is not None


async def _runner(session: AsyncSession, principal: Principal, runner_id: str) -> Runner:
    runner = await session.get(Runner, runner_id)
    if runner is None or runner.account_id != principal.account_id:
        raise NotFound(f"no runner {runner_id!r} in this account")
    return runner


async def revoke_runner(session: AsyncSession, principal: Principal, runner_id: str) -> Runner:
    """Voids the runner's token, and with it every job token of its leases (`builds.hold`). The caller ends the
    runner's leases in the same transaction (`builds.end_leases_of`; that module imports this one)."""
    runner = await _runner(session, principal, runner_id)
    if runner.revoked_at is None:
        runner.revoked_at = now()
        await audit.record(session, principal, "runner.revoke", f"{runner.name} ({runner.id})")
    return runner


async def drain_runner(session: AsyncSession, principal: Principal, runner_id: str, *, drained: bool) -> Runner:
    """Drains (or undrains) a runner: drained, it finishes the builds it holds and claims no new one
    (`builds.claim_next` reads this under the runner's row lock); cancels and approval answers still reach it.
    The caller wakes the runner's polls after the commit so they look again."""
    runner = await _runner(session, principal, runner_id)
    if runner.revoked_at is not None:
        raise NotFound(f"no runner {runner_id!r} in this account (it was revoked)")
    if (runner.drained_at is not None) != drained:
        runner.drained_at = now() if drained else None
        action = "runner.drain" if drained else "runner.undrain"
        await audit.record(session, principal, action, f"{runner.name} ({runner.id})")
    return runner


async def held_builds(session: AsyncSession, principal: Principal) -> dict[str, list[Build]]:
    """The builds each runner of the account holds right now (claimed or running), oldest first, by runner id."""
    mine = select(Runtime.id).where(Runtime.account_id == principal.account_id)
    rows = await session.scalars(  # by runtime and status: ix_builds_dispatch, however many builds are done
        select(Build)
        .where(Build.runtime_id.in_(mine), Build.status.in_(HELD), Build.runner_id.is_not(None))
        .order_by(Build.created_at, Build.id)
    )
    held: dict[str, list[Build]] = {}
    for build in rows:
        held.setdefault(build.runner_id or "", []).append(build)
    return held


def drain_state(runner: Runner, holding: int) -> str:
    """ "draining" while a drained runner still holds builds, "drained" once it holds none, else ""."""
    if runner.drained_at is None:
        return ""
    return "draining" if holding else "drained"
