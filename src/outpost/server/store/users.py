"""The people of an account: an account's admin adds, lists and removes its users and gives each a role.

Passwords and logging in are `ui/users` (scrypt); this module is who may manage whom. Usernames are unique
in the whole installation, because the login form asks for a username only.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Forbidden, NotFound
from outpost.server.models import User
from outpost.server.store import audit
from outpost.server.store.accounts import ADMIN, Principal, check_role, rank, require
from outpost.server.ui import users as passwords


async def add_user(session: AsyncSession, principal: Principal, name: str, role: str, password: str) -> User:
    """A new user of the caller's account, with a role no higher than the caller's own."""
    require(principal, ADMIN)
    check_role(role)
    if rank(role) > rank(principal.role):
        raise Forbidden(f"you cannot give a role above your own ({principal.role})")
    user = await passwords.create_user(session, principal.account_id, name, password)
    user.role = role
    await audit.record(session, principal, "user.add", name, role=role)
    return user


async def list_users(session: AsyncSession, principal: Principal) -> list[User]:
    require(principal, ADMIN)
    rows = await session.scalars(select(User).where(User.account_id == principal.account_id).order_by(User.username))
    return list(rows)


async def remove_user(session: AsyncSession, principal: Principal, name: str) -> User:
    """Removes the user; every session of theirs ends with it. Nobody removes themselves (no lock-out by mistake)."""
    require(principal, ADMIN)
    user = await session.scalar(select(User).where(User.account_id == principal.account_id, User.username == name))
    if user is None:
        raise NotFound(f"no user {name!r} in this account")
    if user.id == principal.user_id:
        raise Conflict("you cannot remove yourself; ask another admin of the account")
    await session.delete(user)
    await session.flush()
    await audit.record(session, principal, "user.remove", name, role=user.role)
    return user
