"""`outpost integration add kubernetes`, `update` and `test` through the real command, against a real control plane,
a real runner process and the test cluster's API server: a kubeconfig read on the CLI's side, a credential the
runners could not replay refused, the allow-list changed by name, and the connection test answered by the runner."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.e2e.processes import ControlPlane, RunnerProcess
from tests.kube.fixtures import kube_api
from tests.server.test_cluster_integrations import certificate

if TYPE_CHECKING:
    from tests.kube.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
__all__ = ["kube_api"]

TOKEN = "sa-token-of-prod-eu-0123456789"
HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hello]\n"


def kubeconfig(path: Path, server: str, ca_pem: str) -> Path:
    """Two contexts: one with a service account token, one that logs in through an exec plugin."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "cloud",
        "clusters": [
            {
                "name": "prod",
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode()},
            }
        ],
        "users": [
            {"name": "deployer", "user": {"token": TOKEN}},
            {"name": "sso", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}}},
        ],
        "contexts": [
            {"name": "prod-deployer", "context": {"cluster": "prod", "user": "deployer", "namespace": "shop"}},
            {"name": "cloud", "context": {"cluster": "prod", "user": "sso"}},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def outpost(control_plane: ControlPlane, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outpost", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=control_plane.cli_env(),
        timeout=60,
    )


def test_a_kubeconfigs_context_becomes_an_integration_that_a_runner_tests(
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_api: Cluster,
    tmp_path: Path,
) -> None:
    kube_api.store.roles[TOKEN] = ("shop", [])  # the integration's service account
    ca, _ = certificate()
    config = kubeconfig(tmp_path / "kubeconfig", kube_api.url, ca)
    start_runner()  # its runtime is where pipelines run, and it answers the test
    (tmp_path / "hello.yml").write_text(HELLO)
    assert outpost(control_plane, "pipeline", "create", "hello", "--file", str(tmp_path / "hello.yml")).returncode == 0

    refused = outpost(control_plane, "integration", "add", "kubernetes", "prod-eu", "--kubeconfig", str(config))
    assert refused.returncode == 2
    assert "the user of context 'cloud' logs in through an exec plugin (aws)" in refused.stderr
    assert "--token-file" in refused.stderr
    assert "no integrations" in outpost(control_plane, "integration", "list").stdout

    args = ("--kubeconfig", str(config), "--context", "prod-deployer", "--behind-firewall", "--allow-pipeline", "hello")
    added = outpost(control_plane, "integration", "add", "kubernetes", "prod-eu", *args)
    assert added.returncode == 0, added.stderr
    assert "cluster integration prod-eu added" in added.stdout
    assert "Pipelines allowed to use it: hello" in added.stdout
    shown = outpost(control_plane, "integration", "show", "prod-eu").stdout
    for line in (
        f"url              {kube_api.url}",
        "namespace        shop",
        "credential       token stored (encrypted)",
        "CA               its own",
        "pipelines        hello",
    ):
        assert line in shown
    listed = outpost(control_plane, "integration", "list").stdout
    assert "prod-eu" in listed
    assert "behind-firewall pipelines:1" in listed
    assert TOKEN not in shown + listed

    tested = outpost(control_plane, "integration", "test", "prod-eu")
    assert tested.returncode == 0, tested.stderr
    from tests.kube.apiserver import VERSION

    runner = socket.gethostname()  # the name a runner registers under unless given one
    assert tested.stdout.strip() == f"Kubernetes v{VERSION}.0-outpost-emulator, asked by runner {runner}"


def test_a_token_from_standard_input_and_an_allow_list_changed_by_name(
    control_plane: ControlPlane, start_runner: Callable[..., RunnerProcess], kube_api: Cluster, tmp_path: Path
) -> None:
    start_runner()
    (tmp_path / "hello.yml").write_text(HELLO)
    for name in ("web", "batch"):
        assert outpost(control_plane, "pipeline", "create", name, "--file", str(tmp_path / "hello.yml")).returncode == 0
    args = ("--server", kube_api.url, "--token-file", "-", "--namespace", "shop")
    added = outpost(control_plane, "integration", "add", "kubernetes", "staging", *args, stdin="wrong-token\n")
    assert added.returncode == 0, added.stderr
    assert "Pipelines allowed to use it: none yet" in added.stdout

    updated = outpost(
        control_plane, "integration", "update", "staging", "--allow-pipeline", "web", "--allow-pipeline", "batch"
    )
    assert "Pipelines allowed to use it: batch, web" in updated.stdout
    updated = outpost(control_plane, "integration", "update", "staging", "--disallow-pipeline", "web")
    assert "Pipelines allowed to use it: batch" in updated.stdout
    unknown = outpost(control_plane, "integration", "update", "staging", "--allow-pipeline", "nowhere")
    assert unknown.returncode == 2
    assert "no pipeline 'nowhere' in this account" in unknown.stderr
    updated = outpost(control_plane, "integration", "update", "staging", "--allow-all-pipelines")
    assert "Pipelines allowed to use it: all" in updated.stdout

    tested = outpost(control_plane, "integration", "test", "staging")
    assert tested.returncode == 1
    assert tested.stdout.strip() == f"{kube_api.url} refused the credential (401)"
    assert "wrong-token" not in tested.stdout + tested.stderr
