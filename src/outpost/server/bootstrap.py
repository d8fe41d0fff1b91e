"""First start-up of an installation: the default account, its admin token and the local runtime.

The admin token is written to <data dir>/admin-token (mode 0600) and reused on later starts while it
is still valid; only its hash is in the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import Unauthorized
from outpost.server.services import Services
from outpost.server.store import accounts, runtimes
from outpost.server.store.accounts import DEFAULT_ACCOUNT, Principal

LOCAL_RUNTIME = "local"


@dataclass
class Installation:
    account: str
    admin_token: str
    token_file: Path


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def bootstrap(services: Services, data_dir: Path, *, local_runtime: bool) -> Installation:
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
    return Installation(account=account.name, admin_token=token, token_file=token_file)


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
