"""The web UI at a phone's width (390 px) in real Chromium, judged by layout, not pixels: nothing wider than
the screen, builds as cards, the navigation behind a Menu button, and a build's log in the first screenful."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.ui.browser import Outpost, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
WIDTH, HEIGHT = 390, 844
LONG = "a-long-log-line-" * 12  # wider than a phone: it scrolls inside the log
STEPS = """version: '1.0'
stages: [build, test, deploy]
steps:
""" + "".join(
    f"  step{i}:\n    title: Step number {i}\n    stage: {stage}\n"
    f"    image: alpine\n    commands: [echo step {i} {LONG}]\n"
    for i, stage in enumerate(["build", "build", "test", "test", "test", "deploy", "deploy", "deploy"], start=1)
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("mobile")) as running:
        with running.control_plane.api() as api:
            api.post("/pipelines", json={"name": "phone", "yaml": STEPS}).raise_for_status()
            for branch in ("main", "feature/a-rather-long-branch-name-for-a-phone"):
                build = api.post("/pipelines/phone/builds", json={"branch": branch, "sha": "4e8a7b21c0de"}).json()
                running.control_plane.wait_for(build["id"], {"success"}, 60)
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    with logged_in(browser, site, viewport={"width": WIDTH, "height": HEIGHT}, is_mobile=True, has_touch=True) as page:
        yield page


def fits_the_screen(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_the_builds_list_is_cards_that_fit_the_screen(page: Page) -> None:
    from playwright.sync_api import expect

    page.goto("/builds")
    rows = page.locator("#build-rows tr")
    expect(rows).to_have_count(2)
    assert fits_the_screen(page)
    expect(page.locator("table.builds thead")).to_be_hidden()
    boxes = []
    for i in range(2):
        card = rows.nth(i).bounding_box()
        status = rows.nth(i).locator("td").nth(0).bounding_box()
        branch = rows.nth(i).locator("td").nth(2).bounding_box()
        assert card is not None
        assert status is not None
        assert branch is not None
        assert card["width"] > WIDTH * 0.85  # a full-width card, not a squeezed table row
        assert branch["y"] > status["y"]  # fields one under the other
        boxes.append(card)
    assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]  # cards one under the other


def test_the_navigation_folds_behind_a_menu_button(page: Page) -> None:
    from playwright.sync_api import expect

    page.goto("/builds")
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "false")
    pipelines = page.get_by_role("navigation", name="Main").get_by_role("link", name="Pipelines")
    expect(pipelines).to_be_hidden()
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(pipelines).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    pipelines.click()
    page.wait_for_url("**/pipelines")
    assert fits_the_screen(page)


def test_a_build_shows_its_log_in_the_first_screenful_before_its_steps(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    page.goto("/builds")
    page.locator("#build-rows a").first.click()
    page.wait_for_url("**/builds/*")
    log = page.locator("#log")
    expect(log).to_contain_text("step")
    box, steps = log.bounding_box(), page.locator("#steps").bounding_box()
    assert box is not None
    assert steps is not None
    assert box["y"] < HEIGHT  # reachable without scrolling past the step list
    assert steps["y"] > box["y"]
    assert box["x"] + box["width"] <= WIDTH  # the log scrolls inside its box, not the page
    search = page.get_by_role("button", name="Search").bounding_box()
    assert search is not None
    assert search["x"] + search["width"] <= WIDTH
    assert steps["width"] > WIDTH * 0.85
    assert fits_the_screen(page)


def test_wide_screens_keep_the_table_and_the_navigation_row(browser: Browser, site: Outpost) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        site.login(page)
        expect(page.locator("table.builds thead")).to_be_visible()
        expect(page.get_by_role("button", name="Menu")).to_be_hidden()
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Pipelines")).to_be_visible()
    finally:
        context.close()
