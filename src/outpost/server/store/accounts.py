"""Accounts, API tokens, roles and the first start-up (default account, admin token, local runtime).

Every caller acts in one account with a role: `viewer` reads, `developer` also runs, cancels, approves and
edits pipelines, `admin` also manages integrations, triggers, runtimes, runners, tokens and users. The
installation's superuser token is an admin of the default account that may also create accounts. A token
may be narrower than its creator (a lower role, one pipeline, an expiry), never wider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from outpost.server.models import Account, ApiToken, Pipeline
from outpost.server.security import API_TOKEN, new_id, new_token, now, token_hash
from outpost.server.store import audit

DEFAULT_ACCOUNT = "default"
LAST_USED_RESOLUTION = 60.0  # seconds; last_used_at is written at most this often
VIEWER, DEVELOPER, ADMIN = "viewer", "developer", "admin"
ROLES = (VIEWER, DEVELOPER, ADMIN)  # each may do everything the ones before it may
DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Principal:
    """Who is calling: an account, through one of its tokens or as a logged-in user, with a role there.

    `pipeline_id` limits a scoped token to reading and running that one pipeline. `address` is the client's
    IP, for the audit log."""

    account_id: str
    account_name: str
    token_id: str
    token_name: str
    is_superuser: bool
    role: str = ADMIN
    pipeline_id: str | None = None
    pipeline_name: str | None = None
    expires_at: float | None = None
    user_id: str | None = None
    address: str | None = None

    @property
    def identity(self) -> str:
        """Stable across renames: who started a build, compared when a pipeline wants another approver."""
        return f"user:{self.user_id}" if self.user_id else f"token:{self.token_id}"

    @property
    def actor(self) -> str:
        """Who, as the audit log writes it."""
        if self.user_id:
            return f"user {self.token_name}"
        if not self.token_id:
            return self.token_name or "system"
        return f"token {self.token_name} ({self.token_id})"

    @property
    def kind(self) -> str:
        return "user" if self.user_id else "token"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid(f"a role is one of {', '.join(ROLES)}, not {role!r}", field="role")
    return role


def rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def require(principal: Principal, role: str, *, scoped: bool = False) -> None:
    """403 unless the caller has at least `role`; a token scoped to one pipeline only where `scoped` allows it."""
    if rank(principal.role) < rank(role):
        raise Forbidden(
            f"this needs the {role} role; your {principal.kind} has {principal.role}",
            error="role_required",
            needs=role,
            has=principal.role,
        )
    if principal.pipeline_id and not scoped:
        raise Forbidden(
            f"this token may only read and run pipeline {principal.pipeline_name or principal.pipeline_id}",
            error="token_scope",
        )


def parse_duration(text: str) -> float:
    """`90m`, `12h`, `30d`, `2w` (also `45s`) -> seconds."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise Invalid(f"a duration is a positive number and a unit (s, m, h, d, w), e.g. 30d, 12h or 90m; not {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


# Built once: every API request authenticates its token with it.
_TOKEN_BY_HASH = (
    select(ApiToken, Account)
    .join(Account, Account.id == ApiToken.account_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


async def authenticate(session: AsyncSession, token: str, address: str | None = None) -> Principal:
    row = (await session.execute(_TOKEN_BY_HASH, {"token_hash": token_hash(token)})).first()
    if row is None or row[0].revoked_at is not None:
        raise Unauthorized("unknown or revoked API token")
    api_token, account = row
    t = now()
    if api_token.expires_at is not None and api_token.expires_at <= t:
        raise Unauthorized("token expired", error="token_expired")
    if api_token.last_used_at is None or t - api_token.last_used_at > LAST_USED_RESOLUTION:
        api_token.last_used_at = t
    pipeline = await session.get(Pipeline, api_token.pipeline_id) if api_token.pipeline_id else None
    return Principal(
        account.id,
        account.name,
        api_token.id,
        api_token.name,
        api_token.is_superuser,
        role=api_token.role if api_token.role in ROLES else VIEWER,
        pipeline_id=api_token.pipeline_id,
        pipeline_name=pipeline.name if pipeline else None,
        expires_at=api_token.expires_at,
        address=address,
    )


# Accounts are never renamed nor removed: a name read once stays true, in every replica.
_NAMES: dict[str, str] = {}
_NAMES_KEPT = 10_000


async def name_of(session: AsyncSession, account_id: str) -> str:
    """The account's name (read once per process: a claim hands it to the runner)."""
    name = _NAMES.get(account_id)
    if name is None:
        name = (await session.get_one(Account, account_id)).name
        if len(_NAMES) >= _NAMES_KEPT:
            _NAMES.clear()
        _NAMES[account_id] = name
    return name


async def get_account(session: AsyncSession, name: str) -> Account | None:
    result: Account | None = await session.scalar(select(Account).where(Account.name == name))
    return result


async def create_account(session: AsyncSession, name: str, principal: Principal | None = None) -> Account:
    if await get_account(session, name) is not None:
        raise Conflict(f"account {name!r} already exists")
    account = Account(id=new_id(), name=name, created_at=now())
    session.add(account)
    await session.flush()
    if principal is not None:
        await audit.record(session, principal, "account.create", name, installation_wide=True)
    return account


async def create_token(
    session: AsyncSession,
    account_id: str,
    name: str,
    *,
    superuser: bool = False,
    role: str = ADMIN,
    pipeline_id: str | None = None,
    expires_at: float | None = None,
    created_by: str | None = None,
) -> tuple[ApiToken, str]:
    """Returns the row and the token itself, which is never stored and cannot be shown again."""
    token = new_token(API_TOKEN)
    row = ApiToken(
        id=new_id(),
        account_id=account_id,
        name=name,
        token_hash=token_hash(token),
        prefix=token[:10],
        is_superuser=superuser,
        created_at=now(),
        role=check_role(role),
        pipeline_id=pipeline_id,
        expires_at=expires_at,
        created_by=created_by,
    )
    session.add(row)
    await session.flush()
    return row, token


async def grant_token(
    session: AsyncSession,
    principal: Principal,
    name: str,
    *,
    role: str | None = None,
    pipeline: str | None = None,
    expires_in: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token of the caller's account, never wider than the caller: no higher role, no other pipeline,
    no later expiry. Only admins make tokens."""
    require(principal, ADMIN)
    role = check_role(role or principal.role)
    if rank(role) > rank(principal.role):
        raise Forbidden(f"a token cannot get more than its creator has: you have {principal.role}, not {role}")
    pipeline_id = None
    if pipeline:
        found = await session.scalar(
            select(Pipeline).where(Pipeline.account_id == principal.account_id, Pipeline.name == pipeline)
        )
        if found is None:
            raise NotFound(f"no pipeline {pipeline!r} in this account")
        pipeline_id = found.id
        if rank(role) > rank(DEVELOPER):
            role = DEVELOPER  # a pipeline's read and run is all a scoped token can use
    expires_at = now() + parse_duration(expires_in) if expires_in else None
    if principal.expires_at is not None and (expires_at is None or expires_at > principal.expires_at):
        expires_at = principal.expires_at  # a token never outlives the one that made it
    row, token = await create_token(
        session,
        principal.account_id,
        name,
        role=role,
        pipeline_id=pipeline_id,
        expires_at=expires_at,
        created_by=principal.actor,
    )
    target = f"{name} ({row.id})"
    await audit.record(session, principal, "token.create", target, role=role, pipeline=pipeline, expires_at=expires_at)
    return row, token


async def list_tokens(session: AsyncSession, principal: Principal) -> list[ApiToken]:
    require(principal, ADMIN)
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.account_id == principal.account_id).order_by(ApiToken.created_at)
    )
    return list(rows)


async def revoke_token(session: AsyncSession, principal: Principal, token_id: str) -> ApiToken:
    """An admin revokes tokens of its account; the installation's superuser token only the superuser may."""
    require(principal, ADMIN)
    row = await session.get(ApiToken, token_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFound(f"no token {token_id!r} in this account")
    if row.is_superuser and not principal.is_superuser:
        raise Forbidden("only the installation's superuser may revoke the superuser token", error="superuser_token")
    if row.revoked_at is None:
        row.revoked_at = now()
        await audit.record(session, principal, "token.revoke", f"{row.name} ({row.id})")
    return row


async def token_is_live(session: AsyncSession, token: str) -> bool:
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    return row is not None and row.revoked_at is None and (row.expires_at is None or row.expires_at > now())


def require_superuser(principal: Principal) -> None:
    if not principal.is_superuser:
        raise Forbidden("only an administrator token of the installation may do this")


def with_address(principal: Principal, address: str | None) -> Principal:
    return replace(principal, address=address)
