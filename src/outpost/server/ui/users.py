"""People who log in to the web UI: a username and a password (scrypt, salted) in one account.

API tokens stay the way scripts and the CLI authenticate; a user's session is a cookie (see `sessions`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid
from outpost.server.models import User
from outpost.server.security import new_id, now
from outpost.server.store.runtimes import check_name

# scrypt with N=2^14, r=8, p=1: ~16 MiB and tens of milliseconds per guess (OWASP's minimum is N=2^17 with
# r=8, p=1 for a 64 MiB budget; we stay below it so a login does not stall a small control plane).
N, R, P, LENGTH = 2**14, 8, 1, 32
MIN_PASSWORD = 12
_DUMMY_SALT = secrets.token_bytes(16)


def _derive(password: str, salt: bytes, n: int = N, r: int = R, p: int = P) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=LENGTH)


def hash_password(password: str, salt: bytes) -> str:
    """`scrypt$N$r$p$HEX`: the parameters travel with the hash, so they can grow later."""
    return f"scrypt${N}${R}${P}${_derive(password, salt).hex()}"


def _verify(password: str, salt_hex: str, stored: str) -> bool:
    scheme, n, r, p, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    candidate = _derive(password, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    return hmac.compare_digest(candidate.hex(), digest)


def new_password() -> str:
    return secrets.token_urlsafe(18)


async def find_user(session: AsyncSession, username: str) -> User | None:
    user: User | None = await session.scalar(select(User).where(User.username == username))
    return user


async def create_user(session: AsyncSession, account_id: str, username: str, password: str) -> User:
    check_name("username", username)
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password has at least {MIN_PASSWORD} characters")
    if await find_user(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    salt = secrets.token_bytes(16)
    user = User(
        id=new_id(),
        account_id=account_id,
        username=username,
        password_hash=await asyncio.to_thread(hash_password, password, salt),
        salt=salt.hex(),
        created_at=now(),
    )
    session.add(user)
    await session.flush()
    return user


async def set_password(user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password has at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    user.password_hash = await asyncio.to_thread(hash_password, password, salt)
    user.salt = salt.hex()
    user.sessions_after = now()  # a new password ends every session opened with the old one


async def check_password(user: User, password: str) -> bool:
    return await asyncio.to_thread(_verify, password, user.salt, user.password_hash)


async def authenticate(session: AsyncSession, username: str, password: str) -> User | None:
    """The user, if the password is theirs. An unknown name costs the same scrypt as a wrong password."""
    user = await find_user(session, username)
    if user is None:
        await asyncio.to_thread(_derive, password, _DUMMY_SALT)
        return None
    return user if await check_password(user, password) else None
