"""The Kubernetes form and a cluster's card in real Chromium against a real control plane and runner: refusals that
say why and keep no credential in the page, a cluster added behind the firewall with its allowed pipelines, tested
from the runner against the test cluster's API server, the allow-list changed on its card, and the cluster edited
from its card's Edit without its token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.kube.fixtures import kube_api
from tests.ui.browser import Outpost, need_browser, outpost

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.kube.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
__all__ = ["kube_api"]
WAIT = 20_000  # ms
TOKEN = "sa-token-0f-prod-eu-in-the-browser"
HELLO = "version: '1.0'\nsteps:\n  hi:\n    image: alpine\n    commands: [echo hi]\n"
EXEC_KUBECONFIG = """apiVersion: v1
kind: Config
current-context: sso
clusters: [{name: prod, cluster: {server: 'https://10.0.0.1:6443'}}]
users: [{name: me, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: gke-gcloud-auth-plugin}}}]
contexts: [{name: sso, context: {cluster: prod, user: me}}]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outpost]:
    need_browser()
    with outpost(tmp_path_factory.mktemp("ui-clusters")) as running:
        with running.control_plane.api() as api:
            for name in ("web", "batch"):
                api.post("/pipelines", json={"name": name, "yaml": HELLO}).raise_for_status()
        yield running


@pytest.fixture
def page(browser: Browser, site: Outpost) -> Iterator[Page]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    site.login(page)
    yield page
    context.close()


def test_a_cluster_is_added_behind_the_firewall_for_the_pipelines_ticked_and_refusals_say_why(
    page: Page, site: Outpost, kube_api: Cluster
) -> None:
    from playwright.sync_api import expect

    from tests.kube.apiserver import VERSION

    kube_api.store.roles[TOKEN] = ("shop", [])  # the integration's service account

    page.goto("/integrations")
    page.locator("section[aria-labelledby=kind-cluster]").get_by_role("link", name="Add").click()
    page.wait_for_url("**/new/integration/kubernetes")
    page.get_by_label("Name", exact=True).fill("prod-eu")
    page.get_by_label("API server").fill("ftp://10.0.0.1")
    page.get_by_label("Service account token").fill(TOKEN)
    page.get_by_role("button", name="Add cluster").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Nothing was saved: the API server 'ftp://10.0.0.1' must be https://HOST[:PORT]")
    expect(page.get_by_label("Service account token")).to_have_value("")  # never sent back
    assert TOKEN not in page.content()

    page.get_by_label("API server").fill("")
    page.get_by_label("…or paste a kubeconfig").fill(EXEC_KUBECONFIG)
    page.get_by_role("button", name="Add cluster").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "the user of context 'sso' logs in through an exec plugin (gke-gcloud-auth-plugin)"
    )
    expect(page.get_by_label("…or paste a kubeconfig")).to_have_value("")

    page.get_by_label("API server").fill(kube_api.url)
    page.get_by_label("Namespace", exact=True).fill("shop")
    page.get_by_label("Service account token").fill(TOKEN)
    page.get_by_label("Behind the firewall").check()
    page.get_by_label("web", exact=True).check()
    page.get_by_role("button", name="Add cluster").click()
    page.wait_for_url("**/integrations#cluster-prod-eu")

    card = page.locator("#cluster-prod-eu")
    expect(card).to_contain_text(kube_api.url)
    expect(card).to_contain_text("shop")
    expect(card).to_contain_text("token set")
    expect(card.locator("#cluster-prod-eu-pipelines")).to_have_text("web")
    expect(card.get_by_role("button", name="Test connection")).to_have_count(0)  # never from the control plane
    expect(card.locator("#cluster-prod-eu-why")).to_contain_text("the control plane never connects to a cluster")
    assert TOKEN not in page.content()
    card.get_by_role("button", name="Test from a runner").click()
    status = page.locator("#cluster-prod-eu").get_by_role("status")
    expect(status).to_contain_text(f"Connected: Kubernetes v{VERSION}.0-outpost-emulator, asked by runner")

    card.get_by_text("Pipelines that may use it").click()
    card.get_by_label("batch", exact=True).check()
    card.get_by_role("button", name="Save pipelines").click()
    expect(page.locator("#cluster-prod-eu-pipelines")).to_have_text("batch, web")
    with site.control_plane.api() as api:
        stored = api.get("/integrations/cluster/prod-eu").json()
    assert (stored["allowed_pipelines"], stored["behind_firewall"], stored["credential"]) == (
        ["batch", "web"],
        True,
        "token",
    )

    card.get_by_role("link", name="Edit prod-eu").click()
    page.wait_for_url("**/integrations/cluster/prod-eu/edit")
    expect(page.get_by_label("Namespace", exact=True)).to_have_value("shop")
    expect(page.get_by_label("Service account token")).to_have_value("")  # set, never sent to the browser
    expect(page.get_by_label("Service account token")).to_have_attribute("placeholder", "set — leave blank to keep it")
    assert TOKEN not in page.content()
    page.get_by_label("Namespace", exact=True).fill("shop-2")
    page.get_by_role("button", name="Save cluster").click()
    page.wait_for_url("**/integrations#cluster-prod-eu")
    expect(page.locator("#cluster-prod-eu")).to_contain_text("shop-2")
    expect(page.locator("#cluster-prod-eu")).to_contain_text("token set")
