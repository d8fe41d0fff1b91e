"""The build page's restart buttons, test results and artifacts in real Chromium, against real control-plane and
runner processes: "Restart from failed step" asks first, skips what succeeded and links both builds; a step's JUnit
report is a table with failures first; an artifact downloads from its link."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.processes import eventually
from tests.ui.browser import Outpost, chromium, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
WAIT = 20_000  # ms

FLAKY = """version: '1.0'
steps:
  prepare:
    image: alpine
    commands: ['echo "made by $CF_BUILD_ID" > prepared.txt']
  test:
    image: alpine
    commands: [cat prepared.txt, 'test -f "$FLAG"']
"""

JUNIT = """<testsuite name="unit">
  <testcase classname="app.MathTest" name="adds" time="0.012"/>
  <testcase classname="app.MathTest" name="divides" time="0.5"><failure message="expected 2 but was 3"/></testcase>
  <testcase classname="app.IoTest" name="reads" time="0.25"/>
</testsuite>
"""

OUTPUTS = """version: '1.0'
steps:
  first:
    image: alpine
    commands: [sleep 3]
  test:
    image: alpine
    commands:
      - mkdir -p reports dist
      - cp "$REPORT" reports/unit.xml
      - echo 'release notes' > dist/notes.txt
      - exit 1
    junit: [reports/unit.xml]
    artifacts: [dist/notes.txt]
    fail_fast: false
  linger:
    image: alpine
    commands: [sleep 2]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("outputs")) as running:
        yield running


@pytest.fixture
def page(site: Outpost) -> Iterator[Page]:
    with chromium() as browser, logged_in(browser, site, timeout=WAIT, accept_downloads=True) as page:
        yield page


def finished(site: Outpost, pipeline: str, yaml: str, variables: dict[str, str]) -> dict[str, str]:
    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": pipeline, "yaml": yaml, "variables": variables}).raise_for_status()
        made = api.post(f"/pipelines/{pipeline}/builds", json={}).json()
    return site.control_plane.wait_for(made["id"], {"success", "failure", "error"}, timeout=60)


def test_restart_from_the_failed_step_asks_first_then_skips_what_succeeded_and_links_both_builds(
    page: Page, site: Outpost, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    flag = tmp_path / "fixed"
    first = finished(site, "flaky", FLAKY, {"FLAG": str(flag)})
    assert first["status"] == "failure"
    page.goto(f"/builds/{first['id']}")
    asked: list[str] = []

    def answer(accept: bool) -> None:
        def handle(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", handle)

    answer(False)
    page.get_by_role("button", name="Restart from failed step").click()
    eventually(lambda: asked or None, timeout=10, what="the confirmation")
    assert asked == [
        "Restart flaky #1 from its failed step? The steps that succeeded are not run again where the runner still"
        " holds this build's volume; otherwise every step runs."
    ]
    expect(page.locator(".build-title h1")).to_have_text("flaky #1")  # nothing happened
    flag.touch()
    answer(True)
    page.get_by_role("button", name="Restart from failed step").click()

    page.wait_for_url(lambda url: first["id"] not in url)
    expect(page.locator(".build-title h1")).to_have_text("flaky #2")
    expect(page.locator("#build-status")).to_contain_text("success")
    expect(page.locator("#restarted-from")).to_have_text("#1 from its failed step")
    expect(page.get_by_role("button", name="Restart from failed step")).to_have_count(0)  # it succeeded
    expect(page.locator("#steps")).to_contain_text("skipped")
    page.locator("#restarted-from").get_by_role("link", name="#1").click()
    page.wait_for_url(f"**/builds/{first['id']}")
    expect(page.locator("#restarted-as")).to_have_text("#2")


def test_a_steps_test_report_is_a_table_with_failures_first_and_its_artifact_downloads(
    page: Page, site: Outpost, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    report = tmp_path / "unit.xml"
    report.write_text(JUNIT)
    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": "reported", "yaml": OUTPUTS, "variables": {"REPORT": str(report)}})
        build = api.post("/pipelines/reported/builds", json={}).json()
    site.control_plane.wait_for(build["id"], {"running", "success", "failure"}, timeout=30)
    page.goto(f"/builds/{build['id']}?step=first")  # a chosen step: the page does not move to the running one
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    expect(page.locator("#tests")).to_have_count(0)  # `first` sleeps: nothing reported yet

    expect(page.locator("#tests summary")).to_contain_text("1 failed of 3")  # while `linger` runs, live
    assert page.evaluate("window.sameDocument") is True
    expect(page.locator("#build-status")).to_contain_text("success")
    rows = page.locator("#test-cases tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("divides")
    expect(rows.nth(0)).to_contain_text("app.MathTest")
    expect(rows.nth(0)).to_contain_text("0.500s")
    expect(rows.nth(0)).to_contain_text("expected 2 but was 3")
    expect(rows.nth(0)).to_have_attribute("data-status", "failed")
    expect(rows.nth(1)).to_have_attribute("data-status", "passed")

    link = page.locator("#artifacts").get_by_role("link", name="dist/notes.txt")
    with page.expect_download() as caught:
        link.click()
    download = caught.value
    assert download.suggested_filename == "notes.txt"
    assert Path(download.path()).read_text() == "release notes\n"


def test_at_phone_width_the_tests_table_scrolls_inside_its_section_not_the_page(site: Outpost, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    report = tmp_path / "unit.xml"
    report.write_text(JUNIT)
    build = finished(site, "phone", OUTPUTS, {"REPORT": str(report)})
    with (
        chromium() as browser,
        logged_in(browser, site, timeout=WAIT, viewport={"width": 390, "height": 844}, is_mobile=True) as page,
    ):
        page.goto(f"/builds/{build['id']}")
        expect(page.locator("#test-cases")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") == 390
        assert page.evaluate("document.querySelector('#tests .table-scroll').scrollWidth") > 390
