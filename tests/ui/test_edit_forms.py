"""The edit forms of the web UI, in process: a trigger's (every field the add form has; a refused change keeps
the form and changes nothing) and a Git or registry integration's (a password left blank keeps the stored one,
shown as "set"; a new Git integration starts at github.com) and a Kubernetes cluster's (its token or key never in
the page; blank keeps it, a new token or kubeconfig replaces it; the API's reasons for a refusal)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from outpost.server.store import accounts, integrations
from tests.server.test_cluster_integrations import certificate
from tests.ui.client import UiClient, csrf_of

pytestmark = pytest.mark.timeout(60)

HELLO = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands: [echo hi]\n"


async def api(admin: UiClient, method: str, path: str, **kwargs: Any) -> Any:
    r = await admin.stack.api(method, path, **kwargs)
    assert r.status_code < 300, r.text
    return r.json()


async def test_a_trigger_is_edited_field_by_field_and_an_emptied_field_clears_its_rule(admin: UiClient) -> None:
    await api(admin, "POST", "/pipelines", json={"name": "app", "yaml": HELLO})
    trigger = await api(
        admin,
        "POST",
        "/triggers",
        json={"pipeline": "app", "provider": "github", "repo": "corp/app", "events": ["push.heads"],
              "branch_regex": "/^main$/"},
    )  # fmt: skip
    form = await admin.get(f"/triggers/{trigger['id']}/edit")
    assert form.status_code == 200
    assert 'value="corp/app"' in form.text
    assert 'value="/^main$/"' in form.text
    r = await admin.submit(
        f"/triggers/{trigger['id']}/edit",
        f"/triggers/{trigger['id']}/edit",
        {
            "name": "app pushes",
            "repo": "corp/app2",
            "events": ["push.heads", "pullrequest.opened"],
            "branch_regex": "",
            "pr_target_regex": "main",
            "modified_files_glob": "src/**",
        },
    )
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", f"/triggers/{trigger['id']}")
    assert (after["name"], after["repo"], after["events"]) == (
        "app pushes",
        "corp/app2",
        ["push.heads", "pullrequest.opened"],
    )
    assert (after["branch_regex"], after["pr_target_regex"], after["modified_files_glob"]) == (None, "main", "src/**")
    assert after["disabled"] is False


async def test_a_refused_trigger_edit_keeps_the_form_with_the_reason_and_changes_nothing(admin: UiClient) -> None:
    await api(admin, "POST", "/pipelines", json={"name": "app", "yaml": HELLO})
    trigger = await api(
        admin,
        "POST",
        "/triggers",
        json={"pipeline": "app", "provider": "github", "repo": "corp/app", "events": ["push"]},
    )
    r = await admin.submit(
        f"/triggers/{trigger['id']}/edit",
        f"/triggers/{trigger['id']}/edit",
        {"name": "x", "repo": "corp/app", "events": ["push"], "branch_regex": "/(unclosed/"},
    )
    assert r.status_code == 422
    assert "Nothing was saved: branch_regex" in r.text
    assert 'value="/(unclosed/"' in r.text  # what was typed comes back to be fixed
    assert (await api(admin, "GET", f"/triggers/{trigger['id']}"))["name"] == "github corp/app"


async def test_a_cron_triggers_edit_form_has_its_schedule_and_no_webhook_fields(admin: UiClient) -> None:
    await api(admin, "POST", "/pipelines", json={"name": "app", "yaml": HELLO})
    trigger = await api(admin, "POST", "/triggers", json={"pipeline": "app", "cron": "0 3 * * *", "branch": "main"})
    form = await admin.get(f"/triggers/{trigger['id']}/edit")
    assert 'value="0 3 * * *"' in form.text
    assert "Git webhook</legend>" not in form.text
    r = await admin.submit(
        f"/triggers/{trigger['id']}/edit", f"/triggers/{trigger['id']}/edit", {"cron": "30 4 * * 1", "branch": ""}
    )
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", f"/triggers/{trigger['id']}")
    assert (after["cron"], after["branch"]) == ("30 4 * * 1", None)


async def test_a_git_integration_edited_with_a_blank_password_keeps_it_and_shows_it_as_set(admin: UiClient) -> None:
    await api(
        admin,
        "POST",
        "/integrations",
        json={"kind": "git", "name": "corp", "provider": "gitlab", "url": "https://git.corp", "username": "ci",
              "password": "s3cret-pass"},
    )  # fmt: skip
    form = await admin.get("/integrations/git/corp/edit")
    assert form.status_code == 200
    assert "s3cret-pass" not in form.text
    assert "set — leave blank to keep it" in form.text
    r = await admin.submit(
        "/integrations/git/corp/edit",
        "/integrations/git/corp/edit",
        {"provider": "gitlab", "url": "https://git2.corp", "username": "bot", "password": "", "tags": "eu, internal"},
    )
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", "/integrations/git/corp")
    assert (after["url"], after["username"], after["tags"], after["has_secret"]) == (
        "https://git2.corp", "bot", ["eu", "internal"], True,
    )  # fmt: skip
    async with admin.stack.services.tx() as session:
        who = await accounts.authenticate(session, admin.stack.admin_token)
        row = await integrations.find_integration(session, who.account_id, "git", "corp")
        assert row is not None
        assert admin.stack.services.secrets.open(row.secret or "") == "s3cret-pass"
    assert "password set" in (await admin.get("/integrations")).text

    r = await admin.submit(
        "/integrations/git/corp/edit",
        "/integrations/git/corp/edit",
        {"provider": "gitlab", "url": "https://git2.corp", "remove_password": "on", "runner_secret": ""},
    )
    assert r.status_code == 303, r.text
    assert (await api(admin, "GET", "/integrations/git/corp"))["has_secret"] is False


async def test_a_registry_integration_takes_a_runner_secret_instead_of_its_password(admin: UiClient) -> None:
    await api(
        admin,
        "POST",
        "/integrations",
        json={"kind": "registry", "name": "harbor", "domain": "harbor.corp:5000", "username": "u", "password": "p"},
    )
    both = await admin.submit(
        "/integrations/registry/harbor/edit",
        "/integrations/registry/harbor/edit",
        {"domain": "harbor.corp:5000", "password": "new", "runner_secret": "HARBOR"},
    )
    assert both.status_code == 422
    assert "not both" in both.text
    assert 'value="new"' not in both.text  # a password is never sent back
    r = await admin.submit(
        "/integrations/registry/harbor/edit",
        "/integrations/registry/harbor/edit",
        {"domain": "harbor2.corp:5000", "runner_secret": "HARBOR", "insecure": "on"},
    )
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", "/integrations/registry/harbor")
    assert (after["domain"], after["runner_secret"], after["has_secret"], after["insecure"]) == (
        "harbor2.corp:5000", "HARBOR", False, True,
    )  # fmt: skip


async def test_a_new_git_integration_starts_at_github_com_and_one_left_without_an_address_gets_its_providers(
    admin: UiClient,
) -> None:
    form = await admin.get("/new/integration")
    assert 'value="https://github.com"' in form.text
    r = await admin.submit("/new/integration", "/new/integration", {"kind": "git", "name": "lab", "provider": "gitlab"})
    assert r.status_code == 303, r.text
    assert (await api(admin, "GET", "/integrations/git/lab"))["url"] == "https://gitlab.com"


CLUSTER_TOKEN = "sa-token-of-prod-eu-never-in-a-page"
KUBECONFIG = """apiVersion: v1
kind: Config
current-context: ci
clusters: [{name: eu, cluster: {server: 'https://10.0.0.9:6443'}}]
users: [{name: deployer, user: {token: kubeconfig-token-never-in-a-page}}]
contexts: [{name: ci, context: {cluster: eu, user: deployer, namespace: shop}}]
"""


async def stored_credential(admin: UiClient, name: str) -> str | None:
    async with admin.stack.services.tx() as session:
        who = await accounts.authenticate(session, admin.stack.admin_token)
        row = await integrations.find_integration(session, who.account_id, "cluster", name)
        assert row is not None
        return admin.stack.services.secrets.open(row.secret) if row.secret else None


async def test_a_cluster_edited_with_a_blank_token_keeps_it_and_its_form_never_holds_it(admin: UiClient) -> None:
    for pipeline in ("web", "batch"):
        await api(admin, "POST", "/pipelines", json={"name": pipeline, "yaml": HELLO})
    await api(
        admin,
        "POST",
        "/integrations",
        json={"kind": "cluster", "name": "prod-eu", "url": "https://10.0.0.1:6443", "namespace": "shop",
              "token": CLUSTER_TOKEN, "allowed_pipelines": ["web"], "behind_firewall": True},
    )  # fmt: skip
    card = (await admin.get("/integrations")).text
    assert 'href="/integrations/cluster/prod-eu/edit"' in card
    form = await admin.get("/integrations/cluster/prod-eu/edit")
    assert form.status_code == 200
    assert CLUSTER_TOKEN not in form.text
    assert "set — leave blank to keep it" in form.text
    assert 'value="https://10.0.0.1:6443"' in form.text
    assert 'value="shop"' in form.text
    assert 'value="web" checked' in form.text
    assert 'value="batch">' in form.text
    r = await admin.submit(
        "/integrations/cluster/prod-eu/edit",
        "/integrations/cluster/prod-eu/edit",
        {"server": "https://10.0.0.2:6443", "namespace": "", "token": "", "pipeline": ["web", "batch"],
         "insecure": "on"},
    )  # fmt: skip
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", "/integrations/cluster/prod-eu")
    assert (after["url"], after["namespace"], after["allowed_pipelines"], after["credential"]) == (
        "https://10.0.0.2:6443", "default", ["batch", "web"], "token",
    )  # fmt: skip
    assert (after["insecure"], after["behind_firewall"]) == (True, False)  # the boxes as posted
    assert await stored_credential(admin, "prod-eu") == CLUSTER_TOKEN


async def test_a_cluster_edit_is_refused_with_the_apis_reasons_and_sends_no_credential_back(admin: UiClient) -> None:
    await api(
        admin,
        "POST",
        "/integrations",
        json={"kind": "cluster", "name": "lab", "url": "https://10.0.0.1:6443", "runner_secret": "LAB_TOKEN"},
    )
    edit = "/integrations/cluster/lab/edit"
    both = await admin.submit(
        edit, edit, {"server": "https://10.0.0.1:6443", "token": CLUSTER_TOKEN, "runner_secret": "LAB_TOKEN"}
    )
    assert both.status_code == 422
    assert "Nothing was saved: give either a password/token or a runner secret, not both" in both.text
    assert CLUSTER_TOKEN not in both.text
    bad = await admin.submit(
        edit, edit, {"server": "ftp://10.0.0.1", "namespace": "Shop", "runner_secret": "LAB_TOKEN"}
    )
    assert bad.status_code == 422
    assert "the API server 'ftp://10.0.0.1' must be https://HOST[:PORT]" in html.unescape(bad.text)
    assert 'value="ftp://10.0.0.1"' in bad.text  # what was typed comes back to be fixed
    broken = "users: [{user: {token: kubeconfig-token-never-in-a-page}}"  # the YAML error is on the token's line
    pasted = await admin.submit(edit, edit, {"server": "https://10.0.0.1:6443", "kubeconfig": broken})
    assert pasted.status_code == 422
    assert "the kubeconfig is not YAML (line 1, column " in pasted.text
    assert "kubeconfig-token-never-in-a-page" not in pasted.text  # nor a kubeconfig, nor a line of it
    assert (await api(admin, "GET", "/integrations/cluster/lab"))["credential"] == "runner-secret"

    r = await admin.submit(edit, edit, {"server": "", "runner_secret": "", "kubeconfig": KUBECONFIG})
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", "/integrations/cluster/lab")
    assert (after["url"], after["namespace"], after["credential"], after["runner_secret"]) == (
        "https://10.0.0.9:6443", "shop", "token", None,
    )  # fmt: skip
    assert await stored_credential(admin, "lab") == "kubeconfig-token-never-in-a-page"
    assert "kubeconfig-token-never-in-a-page" not in (await admin.get(edit)).text

    r = await admin.submit(edit, edit, {"server": "https://10.0.0.9:6443", "runner_secret": "LAB_TOKEN"})
    assert r.status_code == 303, r.text
    assert (await api(admin, "GET", "/integrations/cluster/lab"))["credential"] == "runner-secret"
    assert await stored_credential(admin, "lab") is None


async def test_a_clusters_client_certificate_stays_through_an_edit_until_removed_and_its_key_is_never_shown(
    admin: UiClient,
) -> None:
    cert, key = certificate("deployer")
    ca, _ = certificate()
    await api(
        admin,
        "POST",
        "/integrations",
        json={"kind": "cluster", "name": "mtls", "url": "https://10.0.0.1:6443", "ca_pem": ca,
              "client_cert_pem": cert, "client_key_pem": key},
    )  # fmt: skip
    edit = "/integrations/cluster/mtls/edit"
    form = (await admin.get(edit)).text
    assert "PRIVATE KEY" not in form
    assert "A client certificate and its key are <strong>set</strong>" in form
    assert ca.strip() in html.unescape(form)  # the CA is no secret: it is shown to be kept or changed
    r = await admin.submit(edit, edit, {"server": "https://10.0.0.1:6443", "ca_pem": ca, "namespace": "ops"})
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", "/integrations/cluster/mtls")
    assert (after["credential"], after["has_ca"], after["namespace"]) == ("client-certificate", True, "ops")
    assert await stored_credential(admin, "mtls") == key

    r = await admin.submit(edit, edit, {"server": "https://10.0.0.1:6443", "remove_credential": "on"})
    assert r.status_code == 303, r.text
    after = await api(admin, "GET", "/integrations/cluster/mtls")
    assert (after["credential"], after["has_ca"]) == (None, False)  # and the emptied CA is the system's again


async def test_a_redeliver_button_sent_twice_makes_one_redelivery(admin: UiClient) -> None:
    """The trigger page's Redeliver form carries a key: the same form posted twice (a double click) is one."""
    await api(admin, "POST", "/pipelines", json={"name": "app", "yaml": HELLO})
    trigger = await api(
        admin, "POST", "/triggers", json={"pipeline": "app", "provider": "github", "repo": "o/r", "events": ["push"]}
    )
    await api(admin, "POST", f"/triggers/{trigger['id']}/test-delivery")
    (ping,) = await api(admin, "GET", f"/triggers/{trigger['id']}/deliveries")
    page = (await admin.get(f"/triggers/{trigger['id']}")).text
    key = re.search(r'name="key" value="([^"]+)"', page)
    assert key is not None
    form = {"csrf": csrf_of(page), "key": key.group(1)}
    action = f"/triggers/{trigger['id']}/deliveries/{ping['id']}/redeliver"
    assert (await admin.http.post(action, data=form)).status_code == 303
    assert (await admin.http.post(action, data=form)).status_code == 303
    rows = await api(admin, "GET", f"/triggers/{trigger['id']}/deliveries")
    assert [r["redelivery_of"] for r in rows] == [ping["id"], None]
