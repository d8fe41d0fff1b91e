"""The containers example, unchanged, on the Kubernetes executor: a real control plane and `outpost runner start
--executor kubernetes` against the test cluster, an internal Git server and a registry with htpasswd auth. The
`build` step runs buildah in a builder pod (no privileged Docker-in-Docker) and pushes to a scratch repository that
the nodes pull from; the unit tests run in a pod of the image built; the composition's service and candidate are pods
of their own (the candidate reaches the service by name); the push step's builder pod pushes the tags; the registry
then lists them under the digest the build reported."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.containers import Dockerd, Registry
from tests.e2e.processes import ControlPlane, RunnerProcess
from tests.e2e.test_containers import GIT_PASSWORD, GIT_USER, git_server
from tests.e2e.test_kubernetes import start_kubernetes_runner
from tests.gitserver import GitHttpServer
from tests.kube import fixtures

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry
kube_cluster, buildah_image = fixtures.kube_cluster, fixtures.buildah_image
__all__ = ["git_server"]

pytestmark = pytest.mark.timeout(400)


def test_the_containers_example_runs_unchanged_on_kubernetes_and_the_registry_holds_the_tags(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    dockerd: Dockerd,
    busybox_image: str,
    buildah_image: str,
    registry: Registry,
    git_server: tuple[GitHttpServer, str],
) -> None:
    server, sha = git_server
    # The base image comes from the registry (a builder pod has no Docker engine to take it from).
    base = f"{registry.domain}/base/busybox:1"
    dockerd.cli("tag", busybox_image, base)
    pushed = dockerd.api(
        "POST", f"/images/{base.rsplit(':', 1)[0]}/push", params={"tag": "1"},
        headers={"X-Registry-Auth": registry.docker_auth_header()},
    )  # fmt: skip
    assert pushed.status_code == 200, pushed.text
    assert '"error"' not in pushed.text, pushed.text
    start_kubernetes_runner(
        start_runner, kube_cluster,
        "--builder-image", buildah_image, "--scratch-registry", f"{registry.domain}/outpost-scratch",
    )  # fmt: skip
    steps = [
        ("integration", "add", "git", "corp-git", "--provider", "git", "--url", server.url,
         "--username", GIT_USER, "--password", GIT_PASSWORD, "--behind-firewall", "--default"),
        ("integration", "add", "registry", "corp-registry", "--domain", registry.domain,
         "--username", str(registry.username), "--password", str(registry.password),
         "--behind-firewall", "--default", "--insecure"),
        ("pipeline", "create", "greeter", "--repo", "acme/app", "--git", "corp-git", "--path", "codefresh.yml"),
    ]  # fmt: skip
    for args in steps:
        done = control_plane.cli(*args)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"

    run = control_plane.cli(
        "run", "greeter", "--branch", "main",
        "--var", "REPO=acme/app", "--var", "IMAGE=acme/greeter", "--var", f"BASE_IMAGE={base}",
        timeout=360,
    )  # fmt: skip

    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "building in a builder pod with buildah" in out
    assert "unit tests: 2 passed" in out
    assert "[tests] integration test passed: Hello, team!" in out
    reported = re.search(r"pushed acme/greeter as (sha256:[0-9a-f]{64}) to corp-registry", out)
    assert reported is not None, out
    assert registry.tags("acme/greeter") == sorted([sha[:7], "latest"])
    assert registry.digest("acme/greeter", sha[:7]) == reported.group(1)
    assert str(registry.password) not in out
    assert GIT_PASSWORD not in out
    # Every pod ran as the product made it: builder pods unprivileged, with buildah's few capabilities.
    made = [obj for _, kind, plural, obj in list(kube_cluster.store.history) if plural == "pods" and kind == "ADDED"]
    builders = [p for p in made if p["spec"]["containers"][0]["image"] == buildah_image]
    assert len(builders) == 3  # the build step's, the push step's, and the one removing their image storage
    for pod in builders:
        security = pod["spec"]["containers"][0]["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert "privileged" not in security
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["hostUsers"] is False
    assert all("privileged" not in p["spec"]["containers"][0].get("securityContext", {}) for p in made)
    assert kube_cluster.pods() == []
    # The image storage went with the build: the pipeline's kept volume holds the checkout, not every image built.
    volumes = list(kube_cluster.claim_folder().glob("runner/volumes/*"))
    assert [v for v in volumes if v.is_dir()] != []
    assert list(kube_cluster.claim_folder().glob("runner/volumes/*/.outpost-*")) == []
    build_id = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]["id"]
    assert build_id
