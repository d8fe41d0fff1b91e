"""`make screenshots`: the web UI's main pages, with some builds, a trigger and integrations, as PNG files.

Starts a real control plane and runner (the same helpers as the browser tests) in a temporary folder and
drives Debian's Chromium. Usage: python -m tests.ui.screenshots docs/screenshots
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.e2e.processes import eventually
from tests.ui.browser import Outpost, chromium, outpost

APP = """version: '1.0'
stages: [build, test, deploy]
steps:
  compile:
    title: Compile
    stage: build
    image: golang:1.22
    commands:
      - 'printf "\\033[1;34m==>\\033[0m go build ./...\\n"'
      - 'for p in api worker cli; do printf "\\033[32mok\\033[0m  corp/app/%s\\n" $p; sleep 0.2; done'
  unit:
    title: Unit tests
    stage: test
    image: golang:1.22
    commands:
      - >-
        for i in $(seq 1 60); do
        printf "=== RUN   TestCase%02d\\n--- \\033[32mPASS\\033[0m: TestCase%02d (0.0%ds)\\n" $i $i $((i % 9)); done
      - 'printf "\\033[33mwarning:\\033[0m 2 tests skipped\\n\\033[1;32mPASS\\033[0m\\n"'
  approve:
    type: pending-approval
    title: Deploy to production?
    stage: deploy
  deploy:
    title: Deploy
    stage: deploy
    image: alpine
    commands: [echo deployed]
"""
FLAKY = """version: '1.0'
steps:
  lint:
    title: Lint
    image: alpine
    commands:
      - 'printf "src/app.py:12:1: \\033[31mE302\\033[0m expected 2 blank lines\\n"'
      - exit 1
"""
TYPO = """version: '1.0'
steps:
  test:
    title: Unit tests
    image: python:3.12
    comands:
      - pytest -q
    commands:
      - make test
"""
TESTED = """version: '1.0'
steps:
  test:
    title: Unit tests
    image: python:3.12
    commands:
      - mkdir -p reports dist
      - >-
        printf '<testsuite name="app"><testcase classname="app.test_api" name="test_login" time="0.21"/>
        <testcase classname="app.test_api" name="test_logout" time="0.05"><failure
        message="AssertionError: expected 302, got 500"/></testcase><testcase classname="app.test_models"
        name="test_user" time="0.01"/><testcase classname="app.test_models" name="test_slow"
        time="0"><skipped/></testcase></testsuite>' > reports/junit.xml
      - echo wheel > dist/app-1.4.0-py3-none-any.whl
      - exit 1
    junit: [reports/*.xml]
    artifacts: [dist/*]
"""
BROKEN = """version: '1.0'
steps:
  build:
    image: alpine
    commands: make build
    timeout: forever
"""


def seed(site: Outpost) -> dict[str, Any]:
    with site.control_plane.api() as api:
        api.post(
            "/pipelines",
            json={
                "name": "web-app",
                "yaml": APP,
                "variables": {"GOFLAGS": "-mod=vendor"},
                "secrets": {"DEPLOY_TOKEN": "s3cret-token"},
            },
        ).raise_for_status()
        api.post("/pipelines", json={"name": "lint", "yaml": FLAKY}).raise_for_status()
        api.post("/pipelines", json={"name": "unit", "yaml": TYPO}).raise_for_status()
        api.post("/runtimes", json={"name": "edge-k8s"}).raise_for_status()  # no runner ever connects
        api.post("/pipelines", json={"name": "nightly", "yaml": FLAKY, "runtime": "edge-k8s"}).raise_for_status()
        queued = api.post("/pipelines/nightly/builds", json={"branch": "main"}).json()
        failed = api.post("/pipelines/lint/builds", json={"branch": "fix/typo", "sha": "9f2c1e07d4b5"}).json()
        site.control_plane.wait_for(failed["id"], {"failure"}, 60)
        api.post("/pipelines", json={"name": "api", "yaml": TESTED}).raise_for_status()
        tested = api.post("/pipelines/api/builds", json={"branch": "main", "sha": "b71d0c3e9a42"}).json()
        site.control_plane.wait_for(tested["id"], {"failure"}, 60)
        waiting = api.post("/pipelines/web-app/builds", json={"branch": "main", "sha": "4e8a7b21c0de"}).json()
        eventually(
            lambda: any(s["status"] == "pending-approval" for s in site.control_plane.build(waiting["id"])["steps"]),
            timeout=60,
            what="the approval step",
        )
        trigger = api.post(
            "/triggers",
            json={
                "pipeline": "web-app",
                "provider": "github",
                "repo": "corp/web-app",
                "events": ["push.heads", "pullrequest.opened"],
                "branch_regex": "/^main$/",
            },
        ).json()
        deliveries(site, trigger)
        api.post(
            "/integrations",
            json={
                "kind": "git",
                "name": "corp-gitlab",
                "provider": "gitlab",
                "url": "https://gitlab.corp.internal",
                "runner_secret": "GITLAB_TOKEN",
                "behind_firewall": True,
                "tags": ["internal", "eu"],
            },
        ).raise_for_status()
        api.post(
            "/integrations",
            json={
                "kind": "registry",
                "name": "harbor",
                "domain": "harbor.corp.internal:5000",
                "behind_firewall": True,
                "tags": ["images"],
            },
        ).raise_for_status()
        api.post(
            "/integrations",
            json={"kind": "git", "name": "github", "provider": "github", "url": "https://github.com/corp/web-app.git"},
        ).raise_for_status()
        api.post(
            "/integrations",
            json={
                "kind": "cluster",
                "name": "prod-eu",
                "url": "https://10.0.0.1:6443",
                "runner_secret": "PROD_EU_TOKEN",
                "namespace": "web",
                "behind_firewall": True,
                "allowed_pipelines": ["web-app"],
            },
        ).raise_for_status()
    return {
        "waiting": waiting["id"],
        "failed": failed["id"],
        "trigger": trigger["id"],
        "queued": queued["id"],
        "tested": tested["id"],
    }


def deliveries(site: Outpost, trigger: dict[str, Any]) -> None:
    """The trigger's deliveries list: a test delivery, a push its branch rule filtered, and that push
    redelivered once the rule allowed it (its build runs and waits at the approval step, as web-app's do)."""
    from tests.ui.test_runtimes_triggers import push

    with site.control_plane.api() as api:
        api.post(f"/triggers/{trigger['id']}/test-delivery").raise_for_status()
        filtered = push(site, trigger, "feature/login").json()["delivery"]
        api.patch(f"/triggers/{trigger['id']}", json={"branch_regex": "/^(main|feature/.*)$/"}).raise_for_status()
        api.post(f"/triggers/{trigger['id']}/deliveries/{filtered}/redeliver").raise_for_status()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="outpost-shots-") as folder, outpost(Path(folder)) as site:
        ids = seed(site)
        with chromium() as browser:
            context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 820})
            page = context.new_page()
            page.goto("/login")
            page.screenshot(path=str(out / "login.png"))
            site.login(page)
            shots = [
                ("builds.png", "/builds"),
                ("build-approval.png", f"/builds/{ids['waiting']}"),
                ("build-log.png", f"/builds/{ids['waiting']}?step=unit#L100"),
                ("build-failed.png", f"/builds/{ids['failed']}"),
                ("build-tests.png", f"/builds/{ids['tested']}"),
                ("build-queued.png", f"/builds/{ids['queued']}"),
                ("pipeline-warnings.png", "/pipelines/unit/edit"),
                ("pipelines.png", "/pipelines"),
                ("pipeline.png", "/pipelines/web-app"),
                ("trigger.png", f"/triggers/{ids['trigger']}"),
                ("integrations.png", "/integrations"),
                ("integration-edit.png", "/integrations/git/corp-gitlab/edit"),
                ("cluster-new.png", "/new/integration/kubernetes"),
                ("integrations-clusters.png", "/integrations#kind-cluster"),
                ("trigger-deliveries.png", f"/triggers/{ids['trigger']}#deliveries-title"),
                ("trigger-edit.png", f"/triggers/{ids['trigger']}/edit"),
                ("runtimes.png", "/runtimes"),
            ]
            for name, path in shots:
                if name == "runtimes.png":  # last: drained, the runner takes no new build
                    with site.control_plane.api() as api:
                        api.post(f"/runners/{api.get('/runners').json()[0]['id']}/drain").raise_for_status()
                page.goto(path)
                page.wait_for_timeout(400)  # live regions settle
                page.screenshot(path=str(out / name))
            page.goto("/new/pipeline")
            page.get_by_label("Name", exact=True).fill("broken")
            page.locator("#yaml").fill(BROKEN)
            page.get_by_role("button", name="Create pipeline").click()
            page.screenshot(path=str(out / "pipeline-errors.png"), full_page=True)
            context.close()
            phone = browser.new_context(
                base_url=site.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
            )
            page = phone.new_page()
            site.login(page)
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "mobile-builds.png"))
            page.get_by_role("button", name="Menu").click()
            page.screenshot(path=str(out / "mobile-menu.png"))
            page.goto(f"/builds/{ids['failed']}")
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / "mobile-build.png"))
            phone.close()
    print(f"screenshots in {out}/")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
