"""Real Chromium for UI tests (Debian's, driven by Playwright; never `playwright install`), and real
control-plane and runner processes for it to talk to."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.components import need
from tests.e2e.processes import ControlPlane, Process, RunnerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/lib/chromium/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_browser() -> None:
    need(importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install playwright)")
    need(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")


@contextmanager
def chromium() -> Iterator[Browser]:
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Outpost:
    """A control plane and one runner, as separate processes."""

    control_plane: ControlPlane
    runner: RunnerProcess

    @property
    def url(self) -> str:
        return self.control_plane.url

    @property
    def password(self) -> str:
        return (self.control_plane.data_dir / "admin-password").read_text().strip()

    def login(self, page: Page) -> None:
        page.goto(self.url + "/builds")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(self.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(self.url + "/builds")


@contextmanager
def outpost(folder: Path) -> Iterator[Outpost]:
    """Starts both processes and stops them (and prints their logs if the block raised)."""
    started: list[Process] = []
    try:
        cp = ControlPlane(folder)
        started.append(cp)
        cp.start()
        runner = RunnerProcess(folder, cp.url, cp.install_token(), "--concurrency", "3")
        started.append(runner)
        runner.start()
        yield Outpost(cp, runner)
    except BaseException:
        for process in started:
            print(f"----- {process.name} ({process.log}) -----\n{process.output()[-6000:]}")
        raise
    finally:
        for process in reversed(started):
            process.stop()


@contextmanager
def logged_in(browser: Browser, site: Outpost, *, timeout: float = 20_000, **options: Any) -> Iterator[Page]:
    """A page of a fresh browser context on the site, logged in as its admin (1280 x 900 unless `options` say
    otherwise); the context is closed afterwards."""
    context = browser.new_context(base_url=site.url, **{"viewport": {"width": 1280, "height": 900}, **options})
    context.set_default_timeout(timeout)
    try:
        page = context.new_page()
        site.login(page)
        yield page
    finally:
        context.close()
