"""Kubernetes integrations in the API: the credential sealed at rest and never shown, the allow-list that decides
which pipelines' builds carry the cluster to their runner, who may change it, who may see what, and the control
plane never connecting to a cluster behind the firewall."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from outpost.server.models import AuditEntry, Integration
from outpost.wire import ClusterAccess
from tests.kube.fixtures import kube_api
from tests.server.test_gitqueries import answering_runner
from tests.server.test_integrations import Listener, listener
from tests.server.test_protocol import claim, wait_for_status
from tests.stack import Stack

if TYPE_CHECKING:
    from tests.kube.cluster import Cluster

pytestmark = pytest.mark.timeout(60)
__all__ = ["kube_api", "listener"]

TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-t0ken-of-prod-eu"
FINAL = {"success", "failure", "error", "terminated"}
HELLO = "version: '1.0'\nsteps:\n  hi:\n    image: alpine\n    commands: [echo hi]\n"


def certificate(name: str = "cluster-ca") -> tuple[str, str]:
    """A self-signed certificate and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


async def add(stack: Stack, name: str = "prod-eu", *, auth: str | None = None, **body: Any) -> dict[str, Any]:
    fields = {"url": "https://10.0.0.1:6443", "token": TOKEN, **body}
    r = await stack.api("POST", "/integrations", token=auth, json={"kind": "cluster", "name": name, **fields})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def role_token(stack: Stack, role: str) -> str:
    r = await stack.api("POST", "/tokens", json={"name": f"a-{role}", "role": role})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def test_a_cluster_token_is_sealed_at_rest_and_never_shown(stack: Stack) -> None:
    ca, _ = certificate()
    created = await add(stack, ca_pem=ca, namespace="web")
    assert (created["credential"], created["has_ca"], created["namespace"]) == ("token", True, "web")
    assert (created["allowed_pipelines"], created["all_pipelines"]) == ([], False)  # none until allowed
    for r in (await stack.api("GET", "/integrations"), await stack.api("GET", "/integrations/cluster/prod-eu")):
        assert r.status_code == 200
        assert TOKEN not in r.text
    async with stack.services.tx() as session:
        row = await session.scalar(select(Integration).where(Integration.name == "prod-eu"))
        assert row is not None
        assert row.secret is not None
        assert TOKEN not in row.secret
        assert stack.services.secrets.open(row.secret) == TOKEN


async def test_a_client_certificate_keeps_its_key_sealed_and_the_runner_gets_both(stack: Stack) -> None:
    cert, key = certificate("deployer")
    body = {"token": None, "client_cert_pem": cert, "client_key_pem": key, "all_pipelines": True}
    created = await add(stack, **body)
    assert created["credential"] == "client-certificate"
    assert "PRIVATE KEY" not in (await stack.api("GET", "/integrations/cluster/prod-eu")).text
    async with stack.services.tx() as session:
        row = await session.scalar(select(Integration).where(Integration.name == "prod-eu"))
        assert row is not None
        assert row.secret is not None
        assert "PRIVATE KEY" not in row.secret
    await stack.pipeline("web", HELLO)
    runner = await stack.register()
    await stack.run("web")
    task = await claim(stack, runner.runner_token)
    access = task.clusters["prod-eu"]
    assert (access.client_cert_pem, access.client_key_pem, access.token) == (cert, key, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"url": None}, "needs --server"),
        ({"url": "ftp://10.0.0.1"}, "must be https://HOST"),
        ({"url": "https://u:p@10.0.0.1"}, "must not carry a user"),
        ({"namespace": "Not_A_Label"}, "must be a DNS label"),
        ({"ca_pem": "not a certificate"}, "the CA is not a PEM certificate"),
        ({"token": None, "client_cert_pem": "-----BEGIN CERTIFICATE-----\nxx"}, "needs its key"),
        ({"token": None, "client_key_pem": "key"}, "needs its certificate"),
        ({"runner_secret": "PROD_TOKEN"}, "not both"),
        ({"allowed_pipelines": ["nowhere"]}, "no pipeline 'nowhere'"),
        ({"username": "admin"}, "not a user name"),
    ],
)
async def test_invalid_cluster_integrations_get_422_with_the_reason(
    stack: Stack, body: dict[str, Any], reason: str
) -> None:
    fields = {"kind": "cluster", "name": "x", "url": "https://10.0.0.1:6443", "token": TOKEN, **body}
    r = await stack.api("POST", "/integrations", json=fields)
    assert r.status_code == 422, r.text
    assert reason in r.json()["message"]
    assert (await stack.api("GET", "/integrations")).json() == []


async def test_an_allow_list_is_for_clusters_only(stack: Stack) -> None:
    await stack.pipeline("web", HELLO)
    body = {"kind": "git", "name": "corp", "url": "https://git.corp", "allowed_pipelines": ["web"]}
    r = await stack.api("POST", "/integrations", json=body)
    assert r.status_code == 422
    assert "allow-lists are for kubernetes integrations" in r.json()["message"]


async def test_a_build_carries_only_the_clusters_its_pipeline_is_allowed_to_use(stack: Stack) -> None:
    for name in ("web", "batch", "other"):
        await stack.pipeline(name, HELLO)
    await add(stack, "prod-eu", allowed_pipelines=["web"], namespace="shop")
    await add(stack, "staging", allowed_pipelines=["web", "batch"], behind_firewall=True)
    await add(stack, "sandbox", all_pipelines=True, runner_secret="SANDBOX_TOKEN", token=None, insecure=True)
    await add(stack, "fresh")  # nobody allowed yet
    runner = await stack.register()

    async def clusters_of(pipeline: str) -> dict[str, ClusterAccess]:
        await stack.run(pipeline)
        return (await claim(stack, runner.runner_token)).clusters

    web = await clusters_of("web")
    assert set(web) == {"prod-eu", "staging", "sandbox"}
    assert web["prod-eu"] == ClusterAccess(
        name="prod-eu", server="https://10.0.0.1:6443", token=TOKEN, namespace="shop"
    )
    assert (web["staging"].behind_firewall, web["staging"].namespace) == (True, "default")
    assert (web["sandbox"].token, web["sandbox"].runner_secret, web["sandbox"].insecure) == (
        None,
        "SANDBOX_TOKEN",
        True,
    )
    assert set(await clusters_of("batch")) == {"staging", "sandbox"}
    assert set(await clusters_of("other")) == {"sandbox"}

    r = await stack.api("PATCH", "/integrations/cluster/prod-eu", json={"allowed_pipelines": ["other"]})
    assert r.status_code == 200, r.text
    assert r.json()["allowed_pipelines"] == ["other"]
    assert set(await clusters_of("other")) == {"prod-eu", "sandbox"}
    assert set(await clusters_of("web")) == {"staging", "sandbox"}


async def test_only_an_admin_changes_a_clusters_allow_list_and_it_is_audited(stack: Stack) -> None:
    await stack.pipeline("web", HELLO)
    await add(stack)
    developer = await role_token(stack, "developer")
    for method, path, body in (
        ("PATCH", "/integrations/cluster/prod-eu", {"allowed_pipelines": ["web"]}),
        ("PATCH", "/integrations/cluster/prod-eu", {"all_pipelines": True}),
        ("POST", "/integrations", {"kind": "cluster", "name": "mine", "url": "https://k", "all_pipelines": True}),
        ("DELETE", "/integrations/cluster/prod-eu", None),
    ):
        r = await stack.api(method, path, token=developer, json=body)
        assert r.status_code == 403, r.text
    assert (await stack.api("GET", "/integrations/cluster/prod-eu")).json()["allowed_pipelines"] == []

    r = await stack.api("PATCH", "/integrations/cluster/prod-eu", json={"allowed_pipelines": ["web"]})
    assert r.status_code == 200, r.text
    async with stack.services.tx() as session:
        entries = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "integration.allow")))
    assert [(e.target, e.details) for e in entries] == [
        ("cluster prod-eu", {"all_pipelines": False, "pipelines": ["web"]})
    ]


async def test_a_viewer_sees_a_clusters_name_and_nothing_of_where_it_is_or_who_uses_it(stack: Stack) -> None:
    await stack.pipeline("web", HELLO)
    await add(stack, allowed_pipelines=["web"], namespace="shop", runner_secret="PROD", token=None)
    viewer = await role_token(stack, "viewer")
    for r in (
        await stack.api("GET", "/integrations", token=viewer),
        await stack.api("GET", "/integrations/cluster/prod-eu", token=viewer),
    ):
        assert r.status_code == 200
        for hidden in ("10.0.0.1", "shop", "PROD", "web"):
            assert hidden not in r.text.replace("prod-eu", "")
    shown = (await stack.api("GET", "/integrations/cluster/prod-eu", token=viewer)).json()
    assert (shown["name"], shown["url"], shown["credential"], shown["allowed_pipelines"]) == ("prod-eu", None, None, [])
    developer = await role_token(stack, "developer")
    seen = (await stack.api("GET", "/integrations/cluster/prod-eu", token=developer)).json()
    assert (seen["url"], seen["allowed_pipelines"]) == ("https://10.0.0.1:6443", ["web"])


async def test_another_account_neither_sees_nor_gets_a_cluster(stack: Stack) -> None:
    await stack.pipeline("web", HELLO)
    await add(stack, all_pipelines=True)
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    await stack.api("POST", "/runtimes", token=acme, json={"name": "local"})
    assert (await stack.api("GET", "/integrations", token=acme)).json() == []
    for method in ("GET", "DELETE"):
        assert (await stack.api(method, "/integrations/cluster/prod-eu", token=acme)).status_code == 404
    r = await stack.api("PATCH", "/integrations/cluster/prod-eu", token=acme, json={"all_pipelines": False})
    assert r.status_code == 404
    await stack.pipeline("web", HELLO, token=acme)
    body = {"kind": "cluster", "name": "x", "url": "https://k", "allowed_pipelines": ["web"]}
    assert (await stack.api("POST", "/integrations", token=acme, json=body)).status_code == 201  # its own web
    theirs = await stack.register(token=acme)
    await stack.run("web", token=acme)
    assert set((await claim(stack, theirs.runner_token)).clusters) == {"x"}


async def test_testing_a_cluster_behind_the_firewall_from_the_control_plane_is_refused_without_connecting(
    stack: Stack, listener: Listener
) -> None:
    await add(stack, url=f"https://127.0.0.1:{listener.port}", behind_firewall=True, all_pipelines=True)
    r = await stack.api("POST", "/integrations/cluster/prod-eu/test")
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "behind_firewall"
    await stack.pipeline("web", HELLO)
    runner = await stack.register()
    await stack.run("web")
    assert (await claim(stack, runner.runner_token)).clusters["prod-eu"].token == TOKEN
    assert listener.connections == 0


async def test_a_runner_tests_a_cluster_behind_the_firewall_and_says_which_version_it_saw(
    stack: Stack, kube_api: Cluster, tmp_path: Path
) -> None:
    from tests.kube.apiserver import VERSION  # what the test cluster says it runs

    kube_api.store.roles[TOKEN] = ("shop", [])  # the integration's own service account, allowed nothing
    await add(stack, "prod-eu", url=kube_api.url, behind_firewall=True)
    await add(stack, "kept", url=kube_api.url, token=None, runner_secret="KEPT_TOKEN", behind_firewall=True)
    await add(stack, "stale", url=kube_api.url, token="a-revoked-token", behind_firewall=True)
    async with answering_runner(stack, tmp_path, secrets={"KEPT_TOKEN": TOKEN}):
        r = await stack.api("POST", "/integrations/cluster/prod-eu/check")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "ok": True,
            "message": f"Kubernetes v{VERSION}.0-outpost-emulator, asked by runner t",
            "version": f"v{VERSION}.0-outpost-emulator",
            "platform": "",
            "runner": "t",
        }
        assert (await stack.api("POST", "/integrations/cluster/kept/check")).json()["ok"] is True
        refused = (await stack.api("POST", "/integrations/cluster/stale/check")).json()
        assert refused == {
            "ok": False,
            "message": f"{kube_api.url} refused the credential (401)",
            "version": None,
            "platform": None,
            "runner": None,
        }
    async with answering_runner(stack, tmp_path):  # a runner without the secret says so
        lacking = (await stack.api("POST", "/integrations/cluster/kept/check")).json()
        assert lacking["ok"] is False
        assert "runner secret 'KEPT_TOKEN', which this runner does not have" in lacking["message"]
    # The control plane itself still refuses, and never tried.
    r = await stack.api("POST", "/integrations/cluster/prod-eu/test")
    assert (r.status_code, r.json()["error"]) == (409, "behind_firewall")


async def test_a_cluster_check_with_no_runner_online_answers_503(stack: Stack) -> None:
    await add(stack, behind_firewall=True)
    r = await stack.api("POST", "/integrations/cluster/prod-eu/check", params={"wait": 1})
    assert r.status_code == 503, r.text
    assert "no runner of runtime" in r.json()["message"]


async def test_an_unreachable_cluster_is_reported_by_the_runner_without_its_token(
    stack: Stack, listener: Listener, tmp_path: Path
) -> None:
    await add(stack, url=f"https://127.0.0.1:{listener.port}")
    async with answering_runner(stack, tmp_path):
        r = await stack.api("POST", "/integrations/cluster/prod-eu/check", params={"wait": 5})
    body = r.json()
    assert body["ok"] is False
    assert f"cannot reach https://127.0.0.1:{listener.port}" in body["message"]
    assert TOKEN not in body["message"]
    r = await stack.api("POST", "/integrations/cluster/prod-eu/test")  # not behind the firewall: still a runner's job
    assert (r.status_code, r.json()["error"]) == (409, "tested_by_runner")


DEPLOYS = """version: '1.0'
steps:
  hello:
    image: alpine
    commands: [echo this must not run]
  ship:
    type: deploy
    kind: kubernetes
    cluster: ${{TARGET}}
    namespace: shop
    service: web
    candidate:
      image: registry.corp/web:1
"""


async def test_a_pipeline_naming_a_cluster_it_may_not_use_fails_before_any_step_runs(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.pipeline("web", DEPLOYS, variables={"TARGET": "prod-eu"})
    await stack.pipeline("typo", DEPLOYS, variables={"TARGET": "prod-ue"})
    await stack.pipeline("other", HELLO)
    await add(stack, allowed_pipelines=["other"])  # prod-eu exists, but web is not on its allow-list
    async with answering_runner(stack, tmp_path):
        for pipeline, reason in (
            (
                "web",
                "step ship: pipeline 'web' is not allowed to use kubernetes integration 'prod-eu': an account "
                "admin can allow it (outpost integration update prod-eu --allow-pipeline web)",
            ),
            ("typo", "step ship: there is no kubernetes integration 'prod-ue' in this account"),
        ):
            build = await wait_for_status(stack, (await stack.run(pipeline))["id"], FINAL, timeout=30)
            assert build["status"] == "error"
            assert build["message"].startswith(reason)
            shown = await stack.build(build["id"])
            steps = {s["name"]: s for s in shown["steps"]}
            assert (steps["hello"]["status"], steps["ship"]["status"]) == ("skipped", "skipped")
            log = await stack.api("GET", f"/builds/{build['id']}/steps/hello/log")
            assert "this must not run" not in log.text
            said = (await stack.api("GET", f"/builds/{build['id']}/steps/$system/log")).text
            assert f"no step runs: {reason}" in said
