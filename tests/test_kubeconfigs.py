"""Reading a kubeconfig's context for a Kubernetes integration: what is taken, what is refused and why, and that
malformed files are refused with a reason rather than crashing the CLI or the web form."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from outpost.kubeconfigs import KubeconfigError, parse, read

CA = "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"


def config(user: dict[str, object], **cluster: object) -> str:
    return yaml.safe_dump(
        {
            "current-context": "prod",
            "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443", **cluster}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u", "namespace": "shop"}}],
        }
    )


def test_a_token_context_gives_server_ca_namespace_and_token() -> None:
    ca_data = base64.b64encode(CA.encode()).decode()
    found = parse(config({"token": " t0ken\n"}, **{"certificate-authority-data": ca_data}))
    assert (found.server, found.namespace, found.ca_pem, found.token) == ("https://10.0.0.1:6443", "shop", CA, "t0ken")
    assert (found.client_cert_pem, found.client_key_pem, found.insecure) == (None, None, False)


def test_files_a_kubeconfig_names_are_read_beside_it_and_refused_in_a_pasted_one(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text(CA)
    (tmp_path / "me.crt").write_text("cert")
    (tmp_path / "me.key").write_text("key")
    text = config({"client-certificate": "me.crt", "client-key": "me.key"}, **{"certificate-authority": "ca.pem"})
    (tmp_path / "kubeconfig").write_text(text)
    found = read(tmp_path / "kubeconfig")
    assert (found.ca_pem, found.client_cert_pem, found.client_key_pem, found.token) == (CA, "cert", "key", None)
    with pytest.raises(KubeconfigError, match=r"names a file .*\(kubectl config view --raw --minify --flatten\)"):
        parse(text)


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}, "an exec plugin \\(aws\\)"),
        ({"auth-provider": {"name": "oidc"}}, "an auth provider"),
        ({"username": "admin", "password": "pw"}, "a user name and password"),
        ({"client-certificate-data": base64.b64encode(b"cert").decode()}, "without its key"),
    ],
)
def test_a_login_a_runner_cannot_replay_is_refused_with_what_to_use(user: dict[str, object], reason: str) -> None:
    with pytest.raises(KubeconfigError, match=reason):
        parse(config(user))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: [", "is not YAML"),
        ("[1, 2]", "is not a kubeconfig"),
        ("contexts: 5\ncurrent-context: a", "contexts is not a list"),
        ("current-context: a\ncontexts: [{name: a, context: 7}]", "context 'a' is not a mapping"),
        ("current-context: b\ncontexts: [{name: a, context: {cluster: c}}]", "no context 'b' \\(its contexts: a\\)"),
        ("clusters: []", "no current-context"),
    ],
)
def test_a_malformed_kubeconfig_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(KubeconfigError, match=reason):
        parse(text)
