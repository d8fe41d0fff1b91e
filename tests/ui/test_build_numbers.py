"""Builds are named by pipeline and number (`my-app #2`) in real Chromium against real control-plane and
runner processes: the header, the builds list, the pipeline page and `/pipelines/NAME/builds/N`; and a
cancelled build says who cancelled it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.ui.browser import Outpost, chromium, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
WAIT = 20_000  # ms
IDLE = "idle"  # no runner ever connects to it: its builds stay queued

HELLO = """version: '1.0'
steps:
  hello:
    image: alpine
    commands: [echo hello]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("numbers")) as running:
        with running.control_plane.api() as api:
            api.post("/runtimes", json={"name": IDLE}).raise_for_status()
        yield running


@pytest.fixture
def page(site: Outpost) -> Iterator[Page]:
    with chromium() as browser:
        yield from _page(browser, site)


def _page(browser: Browser, site: Outpost) -> Iterator[Page]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    site.login(page)
    yield page
    context.close()


def run(site: Outpost, pipeline: str, yaml: str, runtime: str | None = None) -> dict[str, str]:
    with site.control_plane.api() as api:
        if api.get(f"/pipelines/{pipeline}").status_code == 404:
            api.post("/pipelines", json={"name": pipeline, "yaml": yaml, "runtime": runtime}).raise_for_status()
        made: dict[str, str] = api.post(f"/pipelines/{pipeline}/builds", json={}).json()
        return made


def test_a_build_is_named_by_its_pipelines_number_on_every_page(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    first = run(site, "numbered", HELLO)
    second = run(site, "numbered", HELLO)

    page.goto("/pipelines/numbered/builds/2")
    page.wait_for_url(f"**/builds/{second['id']}")
    expect(page.locator(".build-title h1")).to_have_text("numbered #2")
    expect(page).to_have_title("numbered #2 · Outpost CI")
    page.goto("/builds?pipeline=numbered")
    expect(page.get_by_role("link", name="numbered #1")).to_have_attribute("href", f"/builds/{first['id']}")
    expect(page.get_by_role("link", name="numbered #2")).to_have_attribute("href", f"/builds/{second['id']}")
    page.goto("/pipelines/numbered")
    expect(page.get_by_role("link", name="#1", exact=True)).to_have_attribute("href", f"/builds/{first['id']}")
    page.goto("/pipelines/numbered/builds/3")
    expect(page.locator("h1")).to_contain_text("Not found")


def test_a_cancelled_build_says_who_cancelled_it(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    build = run(site, "stuck", HELLO, runtime=IDLE)
    page.goto(f"/builds/{build['id']}")
    expect(page.locator("#cancelled-by")).to_have_count(0)

    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Cancel build").click()
    expect(page.locator("#build-status")).to_contain_text("terminated")
    expect(page.locator("#cancelled-by")).to_have_text("user admin")
