"""Runtimes and triggers in daily use (issue 17), in real Chromium against a real control plane and runner: a
runner drained from the Runtimes page finishes its build and takes no new one until undrained, and the page shows
its load, current builds and last poll; a trigger is edited, sent a test delivery, and a filtered delivery is
redelivered after the rule changed, its build running on the runner; a Git integration is edited without its
password, and a new one's address follows the provider."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.processes import eventually
from tests.ui.browser import Outpost, logged_in, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
WAIT = 20_000  # ms

SLOW = """version: '1.0'
steps:
  work:
    image: alpine
    commands: ['sleep 4', 'echo done']
"""
HELLO = """version: '1.0'
steps:
  hello:
    image: alpine
    commands: [echo hello]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("runtimes")) as running:
        with running.control_plane.api() as api:
            eventually(
                lambda: any(r["online"] for r in api.get("/runners").json()), timeout=30, what="the runner online"
            )
            api.post("/pipelines", json={"name": "slow", "yaml": SLOW}).raise_for_status()
            api.post("/pipelines", json={"name": "hello", "yaml": HELLO}).raise_for_status()
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    with logged_in(browser, site, timeout=WAIT) as page:
        yield page


def run(site: Outpost, pipeline: str) -> dict[str, Any]:
    with site.control_plane.api() as api:
        build: dict[str, Any] = api.post(f"/pipelines/{pipeline}/builds", json={}).json()
    return build


def test_a_runner_drained_from_the_runtimes_page_finishes_its_build_and_takes_no_new_one_until_undrained(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        runner = api.get("/runners").json()[0]
    first = run(site, "slow")
    eventually(lambda: site.control_plane.build(first["id"])["status"] == "running", timeout=60, what="running")

    page.goto("/runtimes")
    row = page.locator(f"#runner-{runner['id']}")
    expect(row.get_by_label("1 of 3 slots busy")).to_have_text("1 / 3")
    expect(row.get_by_role("link", name=f"slow #{first['number']}")).to_have_attribute("href", f"/builds/{first['id']}")
    expect(row.locator("time[data-relative]")).to_have_text(re.compile(r"just now|min ago"))

    page.get_by_role("button", name=f"Drain runner {runner['name']}").click()
    expect(row.locator(".tag.drain")).to_have_text("draining")
    second = run(site, "hello")

    site.control_plane.wait_for(first["id"], {"success"}, 60)
    page.reload()
    expect(row.locator(".tag.drain")).to_have_text("drained")
    expect(row.get_by_label("0 of 3 slots busy")).to_be_visible()
    assert site.control_plane.build(second["id"])["status"] == "queued"  # drained: nobody took it
    with site.control_plane.api() as api:
        assert next(r for r in api.get("/runners").json() if r["id"] == runner["id"])["drain"] == "drained"

    page.get_by_role("button", name=f"Undrain runner {runner['name']}").click()
    expect(row.locator(".tag.drain")).to_have_count(0)
    site.control_plane.wait_for(second["id"], {"success"}, 60)


def push(site: Outpost, trigger: dict[str, Any], branch: str) -> httpx.Response:
    """A GitHub push of `branch` (the recorded payload with its ref changed), signed with the trigger's secret."""
    from tests.server.test_webhooks import GITHUB_PUSH, fixture, signed

    payload = json.loads(fixture("github", GITHUB_PUSH))
    payload["ref"] = f"refs/heads/{branch}"
    payload["repository"]["full_name"] = trigger["repo"]
    raw = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", **signed("github", raw, trigger["secret"])}
    path = trigger["endpoint"][trigger["endpoint"].index("/", len("http://")) :]
    return httpx.post(site.url + path, content=raw, headers=headers, timeout=30)


def test_a_trigger_is_edited_tested_and_a_filtered_delivery_redelivered_builds_on_the_runner(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        trigger = api.post(
            "/triggers",
            json={"pipeline": "hello", "provider": "github", "repo": "corp/hello", "events": ["push.heads"],
                  "branch_regex": "/^release$/"},
        ).json()  # fmt: skip
    filtered = push(site, trigger, "main")
    assert filtered.json()["outcome"] == "filtered"
    first = filtered.json()["delivery"][:8]

    page.goto(f"/triggers/{trigger['id']}")
    page.get_by_role("button", name="Send test delivery").click()
    test_row = page.locator("tbody tr").filter(has=page.locator(".tag", has_text="test"))
    expect(test_row).to_contain_text("ping")
    expect(test_row).to_contain_text("200")

    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Pipeline")).to_be_disabled()
    expect(page.get_by_label("Repository")).to_have_value("corp/hello")
    page.get_by_label("Branch (regular expression)").fill("")
    page.get_by_label("Name (optional)").fill("hello pushes")
    page.get_by_role("button", name="Save trigger").click()
    page.wait_for_url(f"**/triggers/{trigger['id']}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("hello pushes")
    expect(page.locator("dl.facts")).to_contain_text("any")

    page.get_by_role("button", name=f"Redeliver #{first}").click()
    again = page.locator("tbody tr").filter(has_text=f"redelivery of #{first}")
    expect(again).to_contain_text("build")
    build_link = again.get_by_role("link", name="build")
    href = build_link.get_attribute("href")
    assert href is not None
    site.control_plane.wait_for(href.rsplit("/", 1)[1], {"success"}, 60)
    build_link.click()
    expect(page.locator("main")).to_contain_text("webhook")


def test_a_git_integration_is_edited_without_its_password_and_a_new_ones_address_follows_the_provider(
    page: Page, site: Outpost
) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        api.post(
            "/integrations",
            json={"kind": "git", "name": "corp", "provider": "github-enterprise", "url": "https://ghe.corp",
                  "username": "ci", "password": "hunter2-secret"},
        ).raise_for_status()  # fmt: skip
    page.goto("/integrations")
    page.get_by_role("link", name="Edit corp").click()
    password = page.get_by_label("Password or token")
    expect(password).to_have_value("")
    expect(password).to_have_attribute("placeholder", "set — leave blank to keep it")
    assert "hunter2-secret" not in page.content()
    page.get_by_label("Username").fill("bot")
    page.get_by_role("button", name="Save integration").click()
    page.wait_for_url("**/integrations#git-corp")
    expect(page.locator("#git-corp")).to_contain_text("bot / password set")
    with site.control_plane.api() as api:
        stored = api.get("/integrations/git/corp").json()
    assert (stored["username"], stored["has_secret"]) == ("bot", True)

    page.goto("/new/integration")
    url = page.get_by_label("URL")
    expect(url).to_have_value("https://github.com")
    page.get_by_label("Provider").select_option("gitlab")
    expect(url).to_have_value("https://gitlab.com")
    url.fill("https://git.corp.example")
    page.get_by_label("Provider").select_option("github")
    expect(url).to_have_value("https://git.corp.example")  # what a person typed stays
