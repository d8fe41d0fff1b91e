"""The people of an account: an account's admin adds, lists and removes its users and gives each a role.

Also the rows the web UI logs in with: finding a user, setting a password, checking one (the hashing itself is
`server/passwords`). Usernames are unique in the whole installation, because the login form asks for a username
only.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Forbidden, NotFound
from outpost.server import passwords
from outpost.server.models import User
from outpost.server.security import new_id, now
from outpost.server.store import audit
from outpost.server.store.accounts import ADMIN, Principal, check_role, rank, require
from outpost.server.store.runtimes import check_name


async def add_user(session: AsyncSession, principal: Principal, name: str, role: str, password: str) -> User:
    """A new user of the caller's account, with a role no higher than the caller's own."""
    require(principal, ADMIN)
    check_role(role)
    if rank(role) > rank(principal.role):
        raise Forbidden(f"you cannot give a role above your own ({principal.role})")
    user = await create_user(session, principal.account_id, name, password)
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


# --- logging in: no role checks here; the bootstrap and the login form are their callers ----------------------


async def find_user(session: AsyncSession, username: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.username == username))
    return user


async def create_user(session: AsyncSession, account_id: str, username: str, password: str) -> User:
    check_name("username", username)
    passwords.check_length(password)
    if await find_user(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    password_hash, salt = await passwords.hashed(password)
    user = User(
        id=new_id(),
        account_id=account_id,
        username=username,
        password_hash=password_hash,
        salt=salt,
        created_at=now(),
    )
    session.add(user)
    await session.flush()
    return user


async def set_password(user: User, password: str) -> None:
    passwords.check_length(password)
    user.password_hash, user.salt = await passwords.hashed(password)
    user.sessions_after = now()  # a new password ends every session opened with the old one


async def check_password(user: User, password: str) -> bool:
    return await passwords.matches(password, user.salt, user.password_hash)


async def authenticate(session: AsyncSession, username: str, password: str) -> User | None:
    """The user, if the password is theirs. An unknown name costs the same scrypt as a wrong password."""
    user = await find_user(session, username)
    if user is None:
        await passwords.waste(password)
        return None
    return user if await check_password(user, password) else None
