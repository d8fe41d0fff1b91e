"""Passwords of the people who log in to the web UI: scrypt, salted, the parameters kept with each hash. Pure
computation (the slow part in a thread); the users' rows are `store/users`.

API tokens stay the way scripts and the CLI authenticate; a user's session is a cookie (see `ui/sessions`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from outpost.errors import Invalid

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


def check_length(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password has at least {MIN_PASSWORD} characters")


async def hashed(password: str) -> tuple[str, str]:
    """A new password's hash and its fresh salt (hex)."""
    salt = secrets.token_bytes(16)
    return await asyncio.to_thread(hash_password, password, salt), salt.hex()


async def matches(password: str, salt_hex: str, stored: str) -> bool:
    return await asyncio.to_thread(_verify, password, salt_hex, stored)


async def waste(password: str) -> None:
    """The scrypt a wrong password costs, for a username nobody has: the answer takes as long."""
    await asyncio.to_thread(_derive, password, _DUMMY_SALT)
