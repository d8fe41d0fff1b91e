"""First start-up of an installation: the default account, its admin token, the local runtime and the web
UI's first user, `admin`.

The admin token is written to <data dir>/admin-token (mode 0600) and reused on later starts while it
is still valid; only its hash is in the database. The same goes for admin's password, in
<data dir>/admin-password (only its scrypt hash is in the database).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Unauthorized
from outpost.server import passwords
from outpost.server.services import Services
from outpost.server.store import accounts, runtimes, users
from outpost.server.store.accounts import DEFAULT_ACCOUNT, Principal

LOCAL_RUNTIME = "local"
ADMIN_USER = "admin"


@dataclass
class Installation:
    account: str
    admin_token: str
    token_file: Path
    password_file: Path | None = None  # the web UI's first user, `admin`: its password, in <data dir>/admin-password
    password: str = ""


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def bootstrap(services: Services, data_dir: Path, *, local_runtime: bool, ui_admin: bool = False) -> Installation:
    """`ui_admin`: also make sure the web UI's `admin` user exists (a scrypt hash: tests that need no UI skip it)."""
    token_file = data_dir / "admin-token"
    async with services.tx() as session:
        account = await accounts.get_account(session, DEFAULT_ACCOUNT)
        if account is None:
            account = await accounts.create_account(session, DEFAULT_ACCOUNT)
        token = token_file.read_text().strip() if token_file.exists() else ""
        if not token or not await accounts.token_is_live(session, token):
            _row, token = await accounts.create_token(session, account.id, "admin", superuser=True)
            write_secret(token_file, token + "\n")
        if local_runtime:
            principal = await accounts.authenticate(session, token)
            if await runtimes.find_runtime(session, account.id, LOCAL_RUNTIME) is None:
                await runtimes.create_runtime(session, principal, LOCAL_RUNTIME)
        password_file = data_dir / "admin-password" if ui_admin else None
        password = await admin_user(session, account.id, password_file) if password_file else ""
    return Installation(account.name, token, token_file, password_file, password)


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
