"""The web UI in real Chromium against a real control plane and a real runner: what a person does every day."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.processes import eventually
from tests.ui.browser import Outpost, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
WAIT = 20_000  # ms: the longest any expectation below waits

BROKEN = """version: '1.0'
steps:
  count:
    image: alpine
    commands: 'echo not a list'
"""
LIVE = """version: '1.0'
stages: [build]
steps:
  count:
    title: Count slowly
    stage: build
    image: alpine
    commands:
      - 'for i in $(seq 1 40); do printf "\\033[32mline %s\\033[0m\\n" $i; sleep 0.1; done'
"""
GATED = """version: '1.0'
steps:
  build:
    image: alpine
    commands: [echo built]
  gate:
    type: pending-approval
    title: Ship it?
  deploy:
    image: alpine
    commands: [echo deployed]
"""
SLOW = """version: '1.0'
steps:
  wait:
    image: alpine
    commands: [echo waiting, sleep 120]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("ui")) as running:
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    context.set_default_timeout(WAIT)
    page = context.new_page()
    site.login(page)
    yield page
    context.close()


def create_pipeline(page: Page, name: str, yaml: str) -> None:
    page.goto("/new/pipeline")
    page.get_by_label("Name", exact=True).fill(name)
    page.locator("#yaml").fill(yaml)
    page.get_by_role("button", name="Create pipeline").click()
    page.wait_for_url(f"**/pipelines/{name}")


def run(page: Page, pipeline: str, branch: str = "main") -> str:
    page.goto(f"/pipelines/{pipeline}")
    page.get_by_label("Branch").fill(branch)
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url("**/builds/*")
    return page.url.rsplit("/", 1)[-1].split("?")[0]


def test_a_wrong_password_is_refused(browser: Browser, site: Outpost) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=site.url)
    try:
        page = context.new_page()
        page.goto("/builds")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
        assert "/login" in page.url
    finally:
        context.close()


def test_a_pipeline_with_an_error_shows_it_at_its_line_then_runs_with_its_log_live(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    page.goto("/new/pipeline")
    page.get_by_label("Name", exact=True).fill("counter")
    page.locator("#yaml").fill(BROKEN)
    page.get_by_role("button", name="Create pipeline").click()

    problems = page.locator("#problems")
    expect(problems).to_contain_text("Line 5, column 15")
    expect(problems).to_contain_text("`commands` must be a list")
    expect(page.locator(".gutter .bad")).to_have_text("5")
    assert page.locator("#yaml").input_value() == BROKEN  # the form came back as it was sent
    page.goto("/pipelines")
    expect(page.locator("main")).to_contain_text("No pipelines yet")  # nothing was stored

    create_pipeline(page, "counter", LIVE)
    build_id = run(page, "counter")
    log = page.locator("#log")
    expect(log).to_contain_text("line 3")
    page.evaluate("window.stayed = true")  # a reload would forget it
    seen = page.locator("#log .l").count()
    assert seen < 40, "the log should still be arriving"
    expect(log).to_contain_text("line 40")
    assert page.evaluate("window.stayed === true"), "the log arrived by reloading the page"
    expect(page.locator("#build-status")).to_contain_text("success")
    assert page.locator("#log .l .f2").first.text_content() == "line 1"  # ANSI green became a class

    # Line links, search and the raw download.
    page.goto(f"/builds/{build_id}?step=count#L7")
    expect(page.locator("#L7")).to_have_class("l hl")
    page.get_by_role("searchbox", name="Search this log").fill("line 1")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".hits")).to_contain_text("11 lines with “line 1”")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    raw = Path(download.value.path()).read_bytes()
    assert b"\x1b[32mline 40\x1b[0m\n" in raw


def test_a_waiting_step_is_approved_from_the_build_page(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    create_pipeline(page, "gated", GATED)
    run(page, "gated")
    approve = page.locator("button[data-approve=gate]")
    expect(approve).to_be_visible()
    expect(page.locator("#build-status")).to_contain_text("waiting for approval")
    approve.click()
    expect(page.locator("#build-status")).to_contain_text("success")
    expect(page.locator("#steps")).to_contain_text("approved by admin")


def test_a_running_build_is_cancelled_from_its_page_after_a_confirmation(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    create_pipeline(page, "slow", SLOW)
    build_id = run(page, "slow")
    expect(page.locator("#log")).to_contain_text("waiting")
    asked: list[str] = []

    def answer(accept: bool) -> None:
        def handle(dialog: Dialog) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", handle)

    answer(False)  # a second thought: nothing is cancelled
    page.get_by_role("button", name="Cancel build").click()
    number = site.control_plane.build(build_id)["number"]
    assert asked == [f"Cancel build slow #{number}? Its running step is stopped and the rest do not run."]
    expect(page.locator("#build-status")).to_contain_text("running")
    assert site.control_plane.build(build_id)["status"] == "running"
    answer(True)
    page.get_by_role("button", name="Cancel build").click()
    expect(page.locator("#build-status")).to_contain_text("terminated")
    assert site.control_plane.build(build_id)["status"] == "terminated"


def test_the_build_list_shows_a_new_build_without_reloading(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        if api.get("/pipelines/listed").status_code == 404:
            api.post("/pipelines", json={"name": "listed", "yaml": LIVE}).raise_for_status()
    page.goto("/builds")
    page.evaluate("window.stayed = true")
    with site.control_plane.api() as api:
        build = api.post("/pipelines/listed/builds", json={"branch": "feature/live"}).json()
    row = page.locator("#build-rows tr", has=page.locator(f'a[href="/builds/{build["id"]}"]'))
    expect(row).to_contain_text("feature/live")
    expect(row).to_contain_text("success")
    assert page.evaluate("window.stayed === true")
    eventually(lambda: site.control_plane.build(build["id"])["status"] == "success", timeout=30, what="the build")


def test_a_trigger_shows_its_endpoint_and_secret_and_the_endpoint_copies(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        if api.get("/pipelines/hooked").status_code == 404:
            api.post("/pipelines", json={"name": "hooked", "yaml": LIVE}).raise_for_status()
    page.goto("/new/trigger?pipeline=hooked")
    page.get_by_label("Provider").select_option("gitlab")
    page.get_by_label("Repository", exact=True).fill("corp/app")
    page.get_by_label("Tag pushes").check()
    page.get_by_role("button", name="Add trigger").click()
    page.wait_for_url("**/triggers/*")
    trigger_id = page.url.rsplit("/", 1)[-1]
    endpoint = f"{site.url}/webhooks/{trigger_id}"
    expect(page.get_by_label("Endpoint (payload URL)")).to_have_value(endpoint)
    expect(page.locator(".steps-howto")).to_contain_text("Push events, Tag push events and Merge request events")
    secret = page.get_by_label("Secret", exact=True)
    expect(secret).to_have_attribute("type", "password")
    page.get_by_role("button", name="Show").click()
    expect(secret).to_have_attribute("type", "text")
    with site.control_plane.api() as api:
        assert secret.input_value() == api.get(f"/triggers/{trigger_id}/secret").json()["secret"]

    page.get_by_role("button", name="Copy endpoint").click()
    expect(page.locator("#endpoint-copied")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == endpoint
    expect(page.locator("main")).to_contain_text("No deliveries yet")


def test_an_integration_behind_the_firewall_cannot_be_tested_and_says_why(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    page.goto("/new/integration")
    page.get_by_label("Kind").select_option("git")
    page.get_by_label("Name", exact=True).fill("corp-git")
    page.get_by_label("URL").fill("https://git.corp.invalid/repos")
    page.get_by_label("Tags").fill("internal, eu")
    page.get_by_role("button", name="Add integration").click()
    page.wait_for_url("**/integrations")

    card = page.locator("#git-corp-git")
    test = card.get_by_role("button", name="Test connection")
    expect(test).to_be_enabled()
    expect(card.locator(".tags")).to_contain_text("internal")
    toggle = card.get_by_role("switch", name="Behind the firewall: off")
    toggle.click()
    card = page.locator("#git-corp-git")
    expect(card.get_by_role("switch")).to_have_attribute("aria-checked", "true")
    test = card.get_by_role("button", name="Test connection")
    expect(test).to_be_disabled()
    expect(card.locator("#git-corp-git-why")).to_contain_text("the control plane cannot reach it")
    assert test.get_attribute("aria-describedby") == "git-corp-git-why"
    with site.control_plane.api() as api:
        answer = api.post("/integrations/git/corp-git/test")
        assert answer.status_code == 409
        assert api.get("/integrations/git/corp-git").json()["behind_firewall"] is True


def test_a_runtime_lists_its_runner_online_and_makes_an_install_command(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    page.goto("/runtimes")
    expect(page.locator("main")).to_contain_text("online")
    page.get_by_role("button", name="New install token").first.click()
    command = page.get_by_label("Install command")
    expect(command).to_have_value(re.compile(rf"^outpost runner start --url {re.escape(site.url)} --token opi_"))


def test_a_pipeline_reads_its_yaml_from_a_repository_chosen_on_the_form(page: Page, site: Outpost) -> None:
    from playwright.sync_api import expect

    with site.control_plane.api() as api:
        body = {"kind": "git", "name": "src-git", "url": "https://git.corp.invalid", "behind_firewall": True}
        api.post("/integrations", json=body).raise_for_status()
    page.goto("/new/pipeline")
    repo_fields = page.locator("#source-repo")
    expect(repo_fields).to_be_hidden()  # with JavaScript only the chosen source's fields show
    page.get_by_label("Name", exact=True).fill("from-repo")
    page.get_by_label("YAML from a repository").check()
    expect(repo_fields).to_be_visible()
    expect(page.locator("#yaml")).to_be_hidden()
    page.get_by_label("Repository", exact=True).fill("corp/app")
    git = page.get_by_label("Git integration")
    expect(git.locator("option[value=src-git]")).to_have_text("src-git (behind the firewall)")
    git.select_option("src-git")
    page.get_by_label("Path", exact=True).fill(".ci/build.yml")
    page.get_by_label("Revision").fill("release")
    page.get_by_role("button", name="Create pipeline").click()
    page.wait_for_url("**/pipelines/from-repo")

    source = page.locator("#yaml-source")
    for fact in ("corp/app", "src-git · behind the firewall", ".ci/build.yml", "release"):
        expect(source).to_contain_text(fact)
    with site.control_plane.api() as api:
        stored = api.get("/pipelines/from-repo").json()
    assert (stored["repo"], stored["git"], stored["yaml_file"], stored["revision"]) == (
        "corp/app",
        "src-git",
        ".ci/build.yml",
        "release",
    )
