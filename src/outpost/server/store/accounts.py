"""Accounts, API tokens and the first start-up (default account, admin token, local runtime)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Forbidden, NotFound, Unauthorized
from outpost.server.models import Account, ApiToken
from outpost.server.security import API_TOKEN, new_id, new_token, now, token_hash

DEFAULT_ACCOUNT = "default"
LAST_USED_RESOLUTION = 60.0  # seconds; last_used_at is written at most this often


@dataclass(frozen=True)
class Principal:
    """Who is calling the API: an account, through one of its tokens."""

    account_id: str
    account_name: str
    token_id: str
    token_name: str
    is_superuser: bool


async def authenticate(session: AsyncSession, token: str) -> Principal:
    row = (
        await session.execute(
            select(ApiToken, Account)
            .join(Account, Account.id == ApiToken.account_id)
            .where(ApiToken.token_hash == token_hash(token))
        )
    ).first()
    if row is None or row[0].revoked_at is not None:
        raise Unauthorized("unknown or revoked API token")
    api_token, account = row
    t = now()
    if api_token.last_used_at is None or t - api_token.last_used_at > LAST_USED_RESOLUTION:
        api_token.last_used_at = t
    return Principal(account.id, account.name, api_token.id, api_token.name, api_token.is_superuser)


async def get_account(session: AsyncSession, name: str) -> Account | None:
    result: Account | None = await session.scalar(select(Account).where(Account.name == name))
    return result


async def create_account(session: AsyncSession, name: str) -> Account:
    if await get_account(session, name) is not None:
        raise Conflict(f"account {name!r} already exists")
    account = Account(id=new_id(), name=name, created_at=now())
    session.add(account)
    await session.flush()
    return account


async def create_token(
    session: AsyncSession, account_id: str, name: str, *, superuser: bool = False
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
    )
    session.add(row)
    await session.flush()
    return row, token


async def list_tokens(session: AsyncSession, principal: Principal) -> list[ApiToken]:
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.account_id == principal.account_id).order_by(ApiToken.created_at)
    )
    return list(rows)


async def revoke_token(session: AsyncSession, principal: Principal, token_id: str) -> ApiToken:
    row = await session.get(ApiToken, token_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFound(f"no token {token_id!r} in this account")
    if row.revoked_at is None:
        row.revoked_at = now()
    return row


async def token_is_live(session: AsyncSession, token: str) -> bool:
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    return row is not None and row.revoked_at is None


def require_superuser(principal: Principal) -> None:
    if not principal.is_superuser:
        raise Forbidden("only an administrator token of the installation may do this")
