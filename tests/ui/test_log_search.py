"""Searching a build's logs across all its steps, in real Chromium against a real control plane and runner:
hits grouped by step, a hit opens its step at its line with the matches marked, and previous/next walk them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.ui.browser import Outpost, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
LOGS = """version: '1.0'
steps:
  compile:
    image: alpine
    commands: ['for i in $(seq 1 30); do echo "compile $i"; done', 'echo "warning: needle in compile"']
  unit:
    title: Unit tests
    image: alpine
    commands:
      - >-
        for i in $(seq 1 40); do
        if [ $((i % 10)) -eq 0 ]; then echo "test $i: NEEDLE found"; else echo "test $i"; fi; done
  deploy:
    image: alpine
    commands: [echo nothing to see]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("search")) as running:
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    with logged_in(browser, site) as page:
        yield page


@pytest.fixture(scope="module")
def build_id(site: Outpost) -> str:
    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": "logs", "yaml": LOGS}).raise_for_status()
        build = api.post("/pipelines/logs/builds", json={}).json()
    site.control_plane.wait_for(build["id"], {"success"}, 60)
    return str(build["id"])


def test_a_search_of_all_steps_lists_the_hits_of_each_step(page: Page, build_id: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"/builds/{build_id}?step=deploy")
    page.get_by_role("searchbox", name="Search this log").fill("needle")
    page.get_by_label("all steps").check()
    page.get_by_role("button", name="Search").click()
    hits = page.locator(".hits")
    expect(hits.locator("#hits-title")).to_contain_text("5 lines with “needle” in 2 steps")
    expect(hits.locator(".hits-step")).to_have_text(["compile", "Unit tests"])  # plan order; deploy has none
    expect(hits.locator("mark")).to_have_count(5)


def test_a_hit_opens_its_step_at_its_line_and_previous_next_walk_the_matches(page: Page, build_id: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"/builds/{build_id}?q=needle&scope=all")
    page.locator(".hits").get_by_role("link", name="line 20").click()
    page.wait_for_url("**step=unit**#L20")
    expect(page.locator("#log-title")).to_have_text("Unit tests")
    marks = page.locator("#log mark.hit")
    expect(marks).to_have_count(4)
    current = page.locator("#log mark.hit.current")
    expect(current).to_have_count(1)
    expect(page.locator("#L20 mark.current")).to_have_text("NEEDLE")  # the match at the line the link named
    expect(page.locator("#hit-count")).to_have_text("2 of 4 shown")
    page.get_by_role("button", name="Next match").click()
    expect(page.locator("#L30 mark.current")).to_have_count(1)
    page.get_by_role("button", name="Previous match").click()
    page.get_by_role("button", name="Previous match").click()
    expect(page.locator("#L10 mark.current")).to_have_count(1)
    expect(page.locator("#hit-count")).to_have_text("1 of 4 shown")
    page.get_by_role("button", name="Previous match").click()  # wraps around
    expect(page.locator("#L40 mark.current")).to_have_count(1)
