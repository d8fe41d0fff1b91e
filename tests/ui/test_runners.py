"""Revoking a runner from the Runtimes page, in real Chromium against a real control plane and runner: it asks
first, the runner is gone from the page and the API at once, and its process is refused on its next call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.processes import eventually
from tests.ui.browser import chromium, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Dialog

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_an_admin_revokes_a_runner_from_the_runtimes_page(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    need_browser()
    with outpost(tmp_path) as site, chromium() as browser:
        with site.control_plane.api() as api:
            runner = eventually(lambda: next(iter(api.get("/runners").json()), None), timeout=30, what="the runner")
        context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        try:
            page = context.new_page()
            site.login(page)
            page.goto("/runtimes")
            revoke = page.get_by_role("button", name=f"Revoke runner {runner['name']}")
            asked: list[str] = []

            def accept(dialog: Dialog) -> None:
                asked.append(dialog.message)
                dialog.accept()

            page.once("dialog", accept)
            revoke.click()
            page.wait_for_url("**/runtimes")
            expect(page.get_by_role("button", name=f"Revoke runner {runner['name']}")).to_have_count(0)
            assert asked == [f"Revoke runner {runner['name']}? Its token stops working at once."]
        finally:
            context.close()
        with site.control_plane.api() as api:
            assert api.get("/runners").json() == []
            audit = api.get("/audit").json()
        assert any(e["action"] == "runner.revoke" for e in audit)
        eventually(lambda: not site.runner.running(), timeout=60, what="the revoked runner to stop")
