"""First start-up of an installation: the default account, its admin token, the local runtime and the web
UI's first user, `admin`.

The admin token is written to <data dir>/admin-token (mode 0600) and reused on later starts while it
is still valid; only its hash is in the database. The same goes for admin's password, in
<data dir>/admin-password (only its scrypt hash is in the database).

The installation lives in the database, not in a data dir: a replica that starts with a data dir of its
own on a database another replica has set up (no token file, no password file) makes no second admin token
and leaves admin's password alone; those files stay with the replica that made them. Only a file that is
there and no longer works is replaced (a revoked token, a password that does not log in): that is how an
operator gets a new one. Replicas starting together take turns (an advisory lock on PostgreSQL), and one whose
secret key is not the installation's is refused (`same_secret_key`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import OutpostError, Unauthorized
from outpost.server import db, passwords
from outpost.server.models import ApiToken
from outpost.server.models import Installation as InstallationRow
from outpost.server.secrets import SecretBox
from outpost.server.security import new_id, now
from outpost.server.services import Services
from outpost.server.store import accounts, runtimes, users
from outpost.server.store.accounts import DEFAULT_ACCOUNT, Principal

LOCAL_RUNTIME = "local"
KEY_CHECK = "outpost installation"  # sealed with the installation's secret key in its row
ADMIN_USER = "admin"


@dataclass
class Installation:
    account: str
    admin_token: str
    token_file: Path | None  # None: this replica's data dir has none (another replica's has)
    password_file: Path | None = None  # the web UI's first user, `admin`: its password, in <data dir>/admin-password
    password: str = ""


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def bootstrap(services: Services, data_dir: Path, *, local_runtime: bool, ui_admin: bool = False) -> Installation:
    """`ui_admin`: also make sure the web UI's `admin` user exists (a scrypt hash: tests that need no UI skip it)."""
    token_file: Path | None = data_dir / "admin-token"
    async with services.tx() as session:
        await db.one_at_a_time(session, db.BOOTSTRAP_LOCK)
        await same_secret_key(session, services.secrets)
        account = await accounts.get_account(session, DEFAULT_ACCOUNT)
        if account is None:
            account = await accounts.create_account(session, DEFAULT_ACCOUNT)
        token = _saved(data_dir / "admin-token")
        if token and await accounts.token_is_live(session, token):
            pass
        elif not token and await _has_admin_token(session, account.id):
            token_file, token = None, ""  # set up by another replica: its data dir holds the token
        else:  # the first start, or this data dir's token was revoked or has expired: a new one
            _row, token = await accounts.create_token(session, account.id, "admin", superuser=True)
            write_secret(data_dir / "admin-token", token + "\n")
        if local_runtime:
            if not token:
                raise OutpostError(f"no admin-token in {data_dir}: copy the one of this installation's first start")
            principal = await accounts.authenticate(session, token)
            if await runtimes.find_runtime(session, account.id, LOCAL_RUNTIME) is None:
                await runtimes.create_runtime(session, principal, LOCAL_RUNTIME)
        password_file = data_dir / "admin-password" if ui_admin else None
        password = await admin_user(session, account.id, password_file) if password_file else ""
        if password_file is not None and not password:
            password_file = None
    return Installation(account.name, token, token_file, password_file, password)


async def same_secret_key(session: AsyncSession, secrets: SecretBox) -> None:
    """The first start seals a constant with its secret key into the installation's row; a replica whose key
    cannot open it is refused before it seals a secret or a session that the others could not open."""
    row = await session.scalar(select(InstallationRow))
    if row is None:
        session.add(InstallationRow(id=new_id(), created_at=now(), key_check=secrets.seal(KEY_CHECK)))
        return
    try:
        same = secrets.open(row.key_check) == KEY_CHECK
    except OutpostError:
        same = False
    if not same:
        raise OutpostError(
            "this control plane's secret key is not its installation's: every replica needs the same"
            " OUTPOST_SECRET_KEY (the first start's is its data dir's secret.key, unless it was set)"
        )


async def _has_admin_token(session: AsyncSession, account_id: str) -> bool:
    """Whether the installation's first start made its admin token and the token still works."""
    found = await session.scalar(
        select(ApiToken.id).where(
            ApiToken.account_id == account_id,
            ApiToken.name == "admin",
            ApiToken.is_superuser.is_(True),
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now()),
        )
    )
    return found is not None


def _saved(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def admin_user(session: AsyncSession, account_id: str, password_file: Path) -> str:
    """The web UI's first user, `admin`, with the password in the file (mode 0600). Like the admin token, the
    password is kept across starts while it still logs in; otherwise a new one is made and written."""
    password = _saved(password_file)
    user = await users.find_user(session, ADMIN_USER)
    if user is None:
        password = password if len(password) >= passwords.MIN_PASSWORD else passwords.new_password()
        await users.create_user(session, account_id, ADMIN_USER, password)
    elif not password:
        return ""  # set by the replica that started the installation: this one does not know it, nor changes it
    elif not password or not await users.check_password(user, password):
        password = passwords.new_password()
        await users.set_password(user, password)
    else:
        return password
    write_secret(password_file, password + "\n")
    return password


async def local_install_token(services: Services, installation: Installation) -> str:
    async with services.tx() as session:
        principal: Principal = await accounts.authenticate(session, installation.admin_token)
        runtime = await runtimes.get_runtime(session, principal, LOCAL_RUNTIME)
        return await runtimes.create_install_token(session, runtime)


async def runner_token_is_live(services: Services, token: str) -> bool:
    async with services.tx() as session:
        try:
            await runtimes.authenticate_runner(session, token)
        except Unauthorized:
            return False
    return True
