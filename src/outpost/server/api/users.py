"""Users of an account in the public API (/api/v1/users): an admin adds, lists and removes them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from outpost.server.api.deps import AsAdmin, Svc
from outpost.server.api.schemas.users import UserIn, UserOut
from outpost.server.models import User
from outpost.server.passwords import new_password
from outpost.server.store import users

router = APIRouter(prefix="/api/v1", tags=["users"])
NO_STORE = {"Cache-Control": "no-store"}


def _out(user: User, account: str, password: str | None = None) -> UserOut:
    return UserOut.read(user, account=account, password=password)


@router.post("/users", status_code=201)
async def add_user(body: UserIn, response: Response, token: AsAdmin, svc: Svc) -> UserOut:
    """Without a password one is generated and answered once."""
    password = body.password or new_password()
    async with svc.as_caller(token) as (session, who):
        user = await users.add_user(session, who, body.name, body.role, password)
    response.headers.update(NO_STORE)
    return _out(user, who.account_name, None if body.password else password)


@router.get("/users")
async def list_users(token: AsAdmin, svc: Svc) -> list[UserOut]:
    async with svc.as_caller(token) as (session, who):
        return [_out(u, who.account_name) for u in await users.list_users(session, who)]


@router.delete("/users/{name}")
async def remove_user(name: str, token: AsAdmin, svc: Svc) -> UserOut:
    async with svc.as_caller(token) as (session, who):
        return _out(await users.remove_user(session, who, name), who.account_name)
