"""Accounts and their API tokens (/api/v1/accounts, /tokens), and the caller's own token (/whoami)."""

from __future__ import annotations

from fastapi import APIRouter

from outpost.server.api.deps import AsAdmin, AsSuperuser, ScopedViewer, Svc
from outpost.server.api.schemas.accounts import AccountIn, AccountOut, TokenIn, TokenOut, WhoAmI
from outpost.server.api.schemas.base import iso
from outpost.server.store import accounts, pipelines, runtimes

router = APIRouter(prefix="/api/v1", tags=["api"])


@router.get("/whoami")
async def whoami(token: ScopedViewer, svc: Svc) -> WhoAmI:
    async with svc.as_caller(token) as (_session, who):
        return WhoAmI(
            account=who.account_name,
            token=who.token_name,
            superuser=who.is_superuser,
            role=who.role,
            pipeline=who.pipeline_name,
            expires_at=iso(who.expires_at),
        )


@router.post("/accounts", status_code=201)
async def create_account(body: AccountIn, token: AsSuperuser, svc: Svc) -> AccountOut:
    async with svc.as_caller(token) as (session, who):
        accounts.require_superuser(who)
        runtimes.check_name("account", body.name)
        account = await accounts.create_account(session, body.name, who)
        _row, secret = await accounts.create_token(session, account.id, "admin", created_by=who.actor)
    return AccountOut(name=account.name, token=secret)


@router.post("/tokens", status_code=201)
async def create_token(body: TokenIn, token: AsAdmin, svc: Svc) -> TokenOut:
    async with svc.as_caller(token) as (session, who):
        row, secret = await accounts.grant_token(
            session, who, body.name, role=body.role, pipeline=body.pipeline, expires_in=body.expires
        )
        return TokenOut.of(row, secret, body.pipeline)


@router.get("/tokens")
async def list_tokens(token: AsAdmin, svc: Svc) -> list[TokenOut]:
    async with svc.as_caller(token) as (session, who):
        names = {p.id: p.name for p in await pipelines.list_pipelines(session, who)}
        return [TokenOut.of(t, None, names.get(t.pipeline_id or "")) for t in await accounts.list_tokens(session, who)]


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, token: AsAdmin, svc: Svc) -> TokenOut:
    async with svc.as_caller(token) as (session, who):
        return TokenOut.of(await accounts.revoke_token(session, who, token_id))
