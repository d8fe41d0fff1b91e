"""A build's steps as a graph, in real Chromium against a real control plane and runner: `mode: parallel`
steps in columns by what they wait on, a parallel step's children side by side, states and durations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.ui.browser import Outpost, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
SECONDS = re.compile(r"^\d+s$")
STARTED = re.compile(r"^started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, finished ")
DIAMOND = """version: '1.0'
mode: parallel
steps:
  fetch:
    image: alpine
    commands: [echo fetch]
  unit:
    image: alpine
    commands: [echo unit]
    when:
      steps:
        - name: fetch
          on: [success]
  lint:
    image: alpine
    commands: [echo lint]
    when:
      steps:
        - name: fetch
  ship:
    title: Ship it
    image: alpine
    commands: [echo ship]
    when:
      steps:
        all:
          - name: unit
          - name: lint
"""
FANOUT = """version: '1.0'
steps:
  prepare:
    image: alpine
    commands: [echo prepare]
  checks:
    type: parallel
    steps:
      one:
        image: alpine
        commands: [echo one]
      two:
        image: alpine
        commands: [echo two]
  report:
    image: alpine
    commands: [echo report]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("graph")) as running:
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    with logged_in(browser, site) as page:
        yield page


def ran(site: Outpost, name: str, yaml: str) -> str:
    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": name, "yaml": yaml}).raise_for_status()
        build = api.post(f"/pipelines/{name}/builds", json={}).json()
    site.control_plane.wait_for(build["id"], {"success"}, 60)
    return str(build["id"])


def columns(page: Page) -> list[list[str]]:
    cols = page.locator(".graph-cols > li")
    names = "els => els.map(e => e.dataset.step)"
    return [cols.nth(i).locator(".graph-step").evaluate_all(names) for i in range(cols.count())]


def node(page: Page, name: str) -> Locator:
    return page.locator(f'.graph-step[data-step="{name}"]')


def box(step: Locator) -> dict[str, float]:
    found = step.bounding_box()
    assert found is not None
    return dict(found)


def test_a_parallel_mode_pipeline_is_drawn_in_columns_by_what_each_step_waits_on(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    build_id = ran(site, "diamond", DIAMOND)
    page.goto(f"/builds/{build_id}")
    page.get_by_text("Graph of the steps").click()
    assert columns(page) == [["fetch"], ["unit", "lint"], ["ship"]]
    unit, lint, fetch, ship = (box(node(page, name)) for name in ("unit", "lint", "fetch", "ship"))
    assert unit["x"] == lint["x"]  # side by side: one column, one under the other
    assert unit["y"] != lint["y"]
    assert fetch["x"] < unit["x"] < ship["x"]
    shipped = node(page, "ship")
    expect(shipped).to_contain_text("Ship it")
    expect(shipped).to_have_attribute("data-status", "success")
    expect(shipped.locator(".dur")).to_have_text(SECONDS)
    expect(shipped).to_have_attribute("title", STARTED)
    shipped.click()
    page.wait_for_url("**step=ship")


def test_a_parallel_steps_children_are_drawn_inside_it_between_the_steps_around_it(page: Page, site: Outpost) -> None:
    build_id = ran(site, "fanout", FANOUT)
    page.goto(f"/builds/{build_id}")
    page.get_by_text("Graph of the steps").click()
    assert columns(page) == [["prepare"], ["checks", "one", "two"], ["report"]]
