"""Fixtures for the web UI: an in-process control plane with the `admin` user, a logged-in client, and one
Chromium per test module for the tests that drive a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from outpost.server.bootstrap import bootstrap
from tests.stack import Stack, running_stack, settings_for
from tests.ui.browser import chromium
from tests.ui.client import UiClient

if TYPE_CHECKING:
    from playwright.sync_api import Browser


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b
