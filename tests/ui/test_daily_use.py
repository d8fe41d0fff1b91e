"""What a daily user trips over, in real Chromium against a real control plane and runner (issue 17): a new
pipeline lands on the default runtime and says when a runtime has no runner; a build waiting for approval
says so everywhere and is answered from its top; typos are warned about; a parallel step written as a list;
finished builds do not claim to follow; unknown paths and refusals keep the navigation; a line link survives
the login."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.processes import eventually
from tests.ui.browser import Outpost, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
WAIT = 20_000  # ms
IDLE = "aaa-idle"  # first in alphabetical order, not the default, and no runner ever connects to it

HELLO = """version: '1.0'
steps:
  hello:
    image: alpine
    commands: [echo hello]
"""
GATED = """version: '1.0'
steps:
  gate:
    type: pending-approval
    title: Ship it?
  deploy:
    image: alpine
    commands: [echo deployed]
"""
TYPO = """version: '1.0'
steps:
  test:
    image: alpine
    comands:
      - echo never
    commands:
      - echo ran
"""
LISTED = """version: '1.0'
steps:
  checks:
    type: parallel
    steps:
      - title: Unit tests
        image: alpine
        commands: [echo unit]
      - title: Lint
        image: alpine
        commands: [echo lint]
"""
LINES = """version: '1.0'
steps:
  count:
    image: alpine
    commands: ['for i in $(seq 1 60); do echo "line $i"; done']
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("daily")) as running:
        with running.control_plane.api() as api:
            api.post("/runtimes", json={"name": IDLE}).raise_for_status()
            eventually(
                lambda: any(r["online"] for r in api.get("/runners").json()), timeout=30, what="the runner online"
            )
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    with logged_in(browser, site, timeout=WAIT) as page:
        yield page


def api_pipeline(site: Outpost, name: str, yaml: str, runtime: str | None = None) -> None:
    with site.control_plane.api() as api:
        if api.get(f"/pipelines/{name}").status_code == 404:
            api.post("/pipelines", json={"name": name, "yaml": yaml, "runtime": runtime}).raise_for_status()


def api_run(site: Outpost, name: str) -> str:
    with site.control_plane.api() as api:
        return str(api.post(f"/pipelines/{name}/builds", json={}).json()["id"])


def test_the_pipeline_form_starts_on_the_default_runtime_and_warns_of_one_with_no_runner(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    page.goto("/new/pipeline")
    runtime = page.get_by_label("Runtime")
    expect(runtime).to_have_value("local")  # the default, though aaa-idle comes first
    warning = page.locator("#runtime-idle")
    expect(warning).to_be_hidden()
    runtime.select_option(IDLE)
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("No runner of this runtime is online")
    runtime.select_option("local")
    expect(warning).to_be_hidden()


def test_a_new_pipeline_made_with_the_defaults_runs_on_a_runner(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    page.goto("/new/pipeline")
    page.get_by_label("Name", exact=True).fill("defaults")
    page.get_by_role("button", name="Create pipeline").click()
    page.wait_for_url("**/pipelines/defaults")
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url("**/builds/*")
    expect(page.locator("#build-status")).to_contain_text("success")


def test_a_queued_build_on_a_runtime_with_no_runner_says_how_to_start_one(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "stranded", HELLO, runtime=IDLE)
    build_id = api_run(site, "stranded")
    page.goto(f"/builds/{build_id}")
    banner = page.locator("#no-runner")
    expect(banner).to_contain_text(f"No runner of runtime {IDLE} is online")
    expect(banner).to_contain_text("outpost runner start")
    expect(banner.get_by_role("link", name="Runtimes")).to_have_attribute("href", "/runtimes")
    page.goto("/pipelines/defaults")  # a build on a runtime with a runner has no such banner
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url("**/builds/*")
    expect(page.locator("#build-status")).to_contain_text("success")
    expect(page.locator("#no-runner")).to_have_count(0)


def test_a_build_waiting_for_approval_says_so_in_its_header_the_list_and_its_filter(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "gated", GATED)
    build_id = api_run(site, "gated")
    page.goto(f"/builds/{build_id}")
    expect(page.locator("#build-status")).to_have_text("‖ waiting for approval")
    banner = page.locator(".approval-banner")
    expect(banner).to_contain_text("Waiting for approval: Ship it?")
    expect(banner).to_contain_text("Who may answer: anyone with the developer role or above")

    page.goto("/builds")
    link = f'a[href="/builds/{build_id}"]'
    row = page.locator("#build-rows tr", has=page.locator(link))
    expect(row).to_contain_text("waiting for approval")
    page.get_by_label("Status").select_option(label="waiting for approval")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#build-rows tr")).to_have_count(1)
    expect(page.locator(f"#build-rows {link}")).to_have_count(1)
    page.goto("/builds?status=running")
    expect(page.locator(f"#build-rows {link}")).to_have_count(0)
    page.goto("/pipelines")
    gated = page.locator("table.pipelines tr", has=page.get_by_role("link", name="gated", exact=True))
    expect(gated).to_contain_text("waiting for approval")

    page.goto(f"/builds/{build_id}")
    page.locator(".approval-banner").get_by_role("button", name="Approve").click()
    expect(page.locator("#build-status")).to_contain_text("success")
    expect(page.locator(".approval-banner")).to_have_count(0)
    expect(page.locator("#steps")).to_contain_text("approved by admin")


def test_a_waiting_build_is_denied_from_the_banner(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "gated", GATED)
    build_id = api_run(site, "gated")
    page.goto(f"/builds/{build_id}")
    page.locator(".approval-banner").get_by_role("button", name="Deny").click()
    expect(page.locator("#build-status")).to_contain_text("failure")
    expect(page.locator("#steps")).to_contain_text("denied by admin")


def test_a_typo_is_warned_about_in_the_editor_on_the_pipeline_page_and_in_the_build_log(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    page.goto("/new/pipeline")
    page.get_by_label("Name", exact=True).fill("typo")
    page.locator("#yaml").fill(TYPO)
    page.get_by_role("button", name="Create pipeline").click()
    page.wait_for_url("**/pipelines/typo")  # a warning saves anyway
    said = "unknown field 'comands' — did you mean 'commands'?"
    expect(page.locator("#warnings")).to_contain_text(f"Line 5, column 5: step 'test': {said}")

    page.goto("/pipelines/typo/edit")
    expect(page.locator("#warnings")).to_contain_text(said)
    expect(page.locator(".gutter .warned")).to_have_text("5")

    build_id = api_run(site, "typo")
    site.control_plane.wait_for(build_id, {"success"}, timeout=30)
    page.goto(f"/builds/{build_id}?step=%24system")
    expect(page.locator("#log")).to_contain_text(f"codefresh.yml:5:5: warning: step 'test': {said}")


def test_a_parallel_step_written_as_a_list_runs_with_the_names_it_was_given(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "listed", LISTED)
    build_id = api_run(site, "listed")
    site.control_plane.wait_for(build_id, {"success"}, timeout=30)
    page.goto(f"/builds/{build_id}")
    steps = page.locator("#steps")
    for name, title in (("unit_tests", "Unit tests"), ("lint", "Lint")):
        item = steps.locator(f'li[data-step="{name}"]')
        expect(item).to_contain_text(title)
        expect(item).to_have_attribute("data-status", "success")
    page.goto(f"/builds/{build_id}?step=unit_tests")
    expect(page.locator("#log")).to_contain_text("unit")


def test_a_finished_build_does_not_offer_to_follow_its_log(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "hello", HELLO)
    build_id = api_run(site, "hello")
    site.control_plane.wait_for(build_id, {"success"}, timeout=30)
    page.goto(f"/builds/{build_id}")
    expect(page.locator("#log")).to_contain_text("hello")
    expect(page.locator("#follow")).to_be_hidden()


def test_an_unknown_path_is_a_page_with_the_navigation_for_a_browser_and_json_for_scripts(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    answer = page.goto("/no/such/page")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Pipelines")).to_be_visible()
    page.goto("/pipelines/not-a-pipeline")  # a refusal of a real route keeps the navigation too
    expect(page.get_by_role("alert")).to_contain_text("not-a-pipeline")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    plain = httpx.get(site.url + "/no/such/page", headers={"Accept": "application/json"}, timeout=10)
    assert plain.status_code == 404
    assert plain.headers["content-type"].startswith("application/json")
    api = httpx.get(site.url + "/api/v1/nothing", headers={"Accept": "text/html"}, timeout=10)
    assert api.headers["content-type"].startswith("application/json")


def test_a_line_link_opened_before_logging_in_lands_on_its_line(browser: Browser, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "lines", LINES)
    build_id = api_run(site, "lines")
    eventually(lambda: site.control_plane.build(build_id)["status"] == "success", timeout=30, what="the build")
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT)
    try:
        page = context.new_page()
        page.goto(f"/builds/{build_id}?step=count#L42")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(site.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"**/builds/{build_id}?step=count#L42")
        expect(page.locator("#L42")).to_have_class("l hl")
    finally:
        context.close()


FLAKY = """version: '1.0'
steps:
  check:
    image: alpine
    commands: ['test "${{FAIL}}" != yes']
"""


def test_the_pipelines_page_shows_each_pipelines_last_builds_success_rate_and_median_duration(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": "flaky", "yaml": FLAKY, "variables": {"FAIL": "no"}}).raise_for_status()
        for fail in ("no", "yes", "no"):
            build = api.post("/pipelines/flaky/builds", json={"variables": {"FAIL": fail}}).json()
            site.control_plane.wait_for(build["id"], {"success", "failure"}, 30)
    page.goto("/pipelines")
    row = page.locator("table.pipelines tr", has=page.get_by_role("link", name="flaky", exact=True))
    spark = row.get_by_role("list", name="Last 3 builds, oldest first")
    bars = spark.get_by_role("link")
    expect(bars).to_have_count(3)
    labels = [bars.nth(i).get_attribute("aria-label") or "" for i in range(3)]
    assert [label.split(",")[0] for label in labels] == ["success", "failure", "success"]
    expect(row.locator(".rate")).to_have_text("67% (2 of 3)")
    expect(row.locator(".median")).to_have_text(re.compile(r"^\d+s$"))
    bars.nth(1).click()
    page.wait_for_url("**/builds/*")
    expect(page.locator("#build-status")).to_contain_text("failure")


def test_a_builds_created_time_reads_as_how_long_ago_with_the_exact_time_at_hand(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    api_pipeline(site, "hello", HELLO)
    build_id = api_run(site, "hello")
    page.goto("/builds")
    row = page.locator("#build-rows tr", has=page.locator(f'a[href="/builds/{build_id}"]'))
    created = row.locator("time[data-relative]")
    expect(created).to_have_text("just now")
    expect(created).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    page.goto(f"/builds/{build_id}")
    expect(page.locator(".facts")).to_contain_text(re.compile(r"\d\d:\d\d:\d\d UTC \(just now\)"))
