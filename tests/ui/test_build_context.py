"""A build's context in real Chromium against real control-plane and runner processes: named by pipeline and
number (`my-app #2`) in the header, the builds list, the pipeline page and `/pipelines/NAME/builds/N`; a
webhook build's linked commit, message, author, pull request and event; who cancelled or approved."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.processes import eventually
from tests.ui.browser import Outpost, chromium, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

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
    with chromium() as browser, logged_in(browser, site, timeout=WAIT) as page:
        yield page


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
    expect(page.locator("#build-status")).to_contain_text("success")  # its page is done updating itself
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


GATED = """version: '1.0'
steps:
  gate:
    type: pending-approval
    title: Ship it?
  deploy:
    image: alpine
    commands: [echo deployed]
"""


def test_a_pull_request_build_shows_its_linked_commit_message_author_and_pull_request(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": "hello-world", "yaml": HELLO}).raise_for_status()
    answer, sha = site.control_plane.deliver_github_pull_request("hello-world")

    page.goto(f"/builds/{answer.json()['build']}")
    commit = page.locator("#commit")
    expect(commit.get_by_role("link", name=sha[:12])).to_have_attribute(
        "href", f"https://github.com/Codertocat/Hello-World/commit/{sha}"
    )
    pr = page.locator("#pull-request")
    expect(pr.get_by_role("link", name="#2")).to_have_attribute(
        "href", "https://github.com/Codertocat/Hello-World/pull/2"
    )
    expect(pr).to_contain_text("Update the README with new information.")
    expect(pr).to_contain_text("into master")
    expect(page.locator("#trigger")).to_contain_text("webhook pullrequest.opened · Codertocat")


def test_an_approved_build_says_who_approved_it(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    build = run(site, "gated", GATED)
    with site.control_plane.api() as api:
        eventually(
            lambda: any(s["status"] == "pending-approval" for s in api.get(f"/builds/{build['id']}").json()["steps"]),
            timeout=60,
            what="the approval step waiting",
        )
    page.goto(f"/builds/{build['id']}")
    page.locator(".approval-banner").get_by_role("button", name="Approve").click()
    expect(page.locator("#build-status")).to_contain_text("success")
    expect(page.locator(".answered")).to_have_text("Ship it? · admin")


def test_a_restarted_build_links_the_build_it_repeated(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    first = run(site, "again", HELLO)
    page.goto(f"/builds/{first['id']}")
    expect(page.locator("#build-status")).to_contain_text("success")
    expect(page.locator("#restarted-from")).to_have_count(0)
    page.get_by_role("button", name="Restart").click()
    page.wait_for_url(lambda url: first["id"] not in url)
    expect(page.locator(".build-title h1")).to_have_text("again #2")
    page.locator("#restarted-from").get_by_role("link", name="#1").click()
    page.wait_for_url(f"**/builds/{first['id']}")


def test_the_builds_list_filters_searches_and_pages_on_to_older_builds(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        api.post("/pipelines", json={"name": "paged", "yaml": HELLO, "runtime": IDLE}).raise_for_status()
        made = [api.post("/pipelines/paged/builds", json={"branch": f"topic-{i}"}).json() for i in range(101)]
    page.goto("/builds")
    page.get_by_label("Search").fill("topic-7")  # topic-7 and topic-70 … topic-79
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#build-rows tr")).to_have_count(11)
    page.get_by_label("Search").fill("")
    page.get_by_label("Branch").fill("topic-7")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#build-rows tr")).to_have_count(1)
    expect(page.locator("#build-rows")).to_contain_text("paged #8")

    page.goto("/builds?pipeline=paged")
    expect(page.locator("#build-rows tr")).to_have_count(100)
    expect(page.get_by_role("link", name="paged #101")).to_be_visible()
    page.get_by_role("link", name="Older builds →").click()
    expect(page.locator("#build-rows tr")).to_have_count(1)
    expect(page.get_by_role("link", name="paged #1", exact=True)).to_have_attribute("href", f"/builds/{made[0]['id']}")
    expect(page.locator("#older")).to_have_count(0)
    expect(page.locator("#build-rows")).not_to_have_attribute("data-live", re.compile(".*"))


def test_an_admin_turns_a_pipelines_badge_on_and_copies_its_markdown(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    run(site, "badged", HELLO)
    page.goto("/pipelines/badged")
    section = page.locator("#badge")
    expect(section.get_by_role("img")).to_have_count(0)
    section.get_by_role("button", name="Turn the badge on").click()
    image = page.locator("#badge").get_by_role("img", name="build status of badged")
    expect(image).to_be_visible()
    eventually(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"), timeout=10, what="the badge drawn")
    markdown = page.get_by_label("Markdown for a README").input_value()
    src = image.get_attribute("src")
    assert src is not None
    assert re.fullmatch(
        r"\[!\[build status\]\(" + re.escape(src) + r"\?branch=main\)\]\(http://[^)]+/pipelines/badged\)", markdown
    )
    svg = httpx.get(src, timeout=10)  # no session: as a README's reader
    assert svg.headers["content-type"] == "image/svg+xml"
    assert "build: passing" in svg.text or "build: unknown" in svg.text
    page.get_by_role("button", name="Turn the badge off").click()
    expect(page.locator("#badge").get_by_role("img")).to_have_count(0)
    assert httpx.get(src, timeout=10).status_code == 404
