"""Fixtures for the web UI: an in-process control plane with the `admin` user, and a logged-in client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outpost.server.bootstrap import bootstrap
from tests.stack import Stack, running_stack, settings_for
from tests.ui.client import UiClient


@pytest.fixture
async def ui_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}", tmp_path / "data")
    async with running_stack(settings) as stack:
        installation = await bootstrap(stack.services, stack.data_dir, local_runtime=True, ui_admin=True)
        yield stack, installation.password


@pytest.fixture
async def admin(ui_stack: tuple[Stack, str]) -> AsyncIterator[UiClient]:
    stack, password = ui_stack
    async with UiClient(stack) as client:
        r = await client.login("admin", password)
        assert r.status_code == 303, r.text
        yield client
