"""The containers example, unchanged, on the Kubernetes executor with the privileged Docker-in-Docker opt-in: a real
control plane and `outpost runner start --executor kubernetes --docker-in-docker --dind-image …` against the test
cluster, an internal Git server and a registry with htpasswd auth. The build and push steps go through the build's
one dockerd pod; the image also goes to the scratch repository so that the unit tests' and the composition's pods
can pull it. And the same opt-in when the build's engine runs in an engine pod (`--engine-image`), which then makes
the daemon's pod and reaches its socket itself."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.containers import Dockerd, Registry
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.e2e.test_containers import GIT_PASSWORD, GIT_USER, git_server
from tests.e2e.test_kubernetes import start_kubernetes_runner
from tests.gitserver import GitHttpServer
from tests.kube import fixtures

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry
kube_cluster, dind_image = fixtures.kube_cluster, fixtures.dind_image
# Engine pods come with the engine-pod slice: until this tree has them, their test below skips.
engine_image = getattr(fixtures, "engine_image", None)
__all__ = ["git_server"]

pytestmark = pytest.mark.timeout(400)


def test_the_containers_example_runs_unchanged_through_the_build_s_docker_in_docker_pod(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    dockerd: Dockerd,
    busybox_image: str,
    dind_image: str,
    registry: Registry,
    git_server: tuple[GitHttpServer, str],
) -> None:
    server, sha = git_server
    base = f"{registry.domain}/base/busybox:1"  # the daemon in the pod pulls it, with the integration's login
    dockerd.cli("tag", busybox_image, base)
    pushed = dockerd.api(
        "POST", f"/images/{base.rsplit(':', 1)[0]}/push", params={"tag": "1"},
        headers={"X-Registry-Auth": registry.docker_auth_header()},
    )  # fmt: skip
    assert pushed.status_code == 200, pushed.text
    assert '"error"' not in pushed.text, pushed.text
    start_kubernetes_runner(
        start_runner, kube_cluster,
        "--docker-in-docker", "--dind-image", dind_image, "--node-name", "node-a",
        "--scratch-registry", f"{registry.domain}/outpost-scratch",
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
    assert "building with the build's Docker-in-Docker daemon" in out
    assert "unit tests: 2 passed" in out
    assert "[tests] integration test passed: Hello, team!" in out
    reported = re.search(r"pushed acme/greeter as (sha256:[0-9a-f]{64}) to corp-registry", out)
    assert reported is not None, out
    assert registry.tags("acme/greeter") == sorted([sha[:7], "latest"])
    assert registry.digest("acme/greeter", sha[:7]) == reported.group(1)
    assert str(registry.password) not in out
    assert GIT_PASSWORD not in out
    made = [obj for _, kind, plural, obj in list(kube_cluster.store.history) if plural == "pods" and kind == "ADDED"]
    privileged = [p for p in made if p["spec"]["containers"][0].get("securityContext", {}).get("privileged")]
    assert [p["spec"]["containers"][0]["image"] for p in privileged] == [dind_image]  # one daemon, the build's
    assert {p["spec"].get("nodeName") for p in made} == {"node-a"}  # every pod beside the daemon's socket
    assert kube_cluster.pods() == []


INLINE = """version: '1.0'
steps:
  build_image:
    type: build
    image_name: acme/inline
    tag: '1'
    dockerfile:
      content: |
        FROM BASE
        RUN echo built-inside-dind > /proof && cat /proof
    disable_push: true
  push:
    type: push
    candidate: ${{build_image}}
    tag: '1'
  look:
    image: DIND
    commands:
      - docker images --format 'seen {{.Repository}}:{{.Tag}}'
      - docker run --rm ${{build_image}} cat /proof
"""


def test_an_engine_pod_builds_and_pushes_through_the_build_s_docker_in_docker_pod(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    dockerd: Dockerd,
    busybox_image: str,
    dind_image: str,
    registry: Registry,
    request: pytest.FixtureRequest,
) -> None:
    if engine_image is None:
        pytest.skip("this tree has no engine pods (`--engine-image`) yet")
    image = request.getfixturevalue("engine_image")
    base = f"{registry.domain}/base/busybox:1"
    dockerd.cli("tag", busybox_image, base)
    pushed = dockerd.api(
        "POST", f"/images/{base.rsplit(':', 1)[0]}/push", params={"tag": "1"},
        headers={"X-Registry-Auth": registry.docker_auth_header()},
    )  # fmt: skip
    assert pushed.status_code == 200, pushed.text
    start_kubernetes_runner(
        start_runner, kube_cluster,
        "--docker-in-docker", "--dind-image", dind_image, "--node-name", "node-a",
        "--scratch-registry", f"{registry.domain}/outpost-scratch", "--engine-image", image,
    )  # fmt: skip
    (tmp_path / "p.yml").write_text(INLINE.replace("BASE", base).replace("DIND", dind_image))
    for args in [
        ("integration", "add", "registry", "corp-registry", "--domain", registry.domain,
         "--username", str(registry.username), "--password", str(registry.password),
         "--behind-firewall", "--default", "--insecure"),
        ("pipeline", "create", "inline", "--file", str(tmp_path / "p.yml")),
    ]:  # fmt: skip
        done = control_plane.cli(*args)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"

    run = control_plane.cli("run", "inline", "--branch", "main", timeout=300)

    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "building with the build's Docker-in-Docker daemon" in out
    assert "seen acme/inline:1" in out
    assert out.splitlines().count("built-inside-dind") == 2  # the RUN line, then a container of the image
    assert registry.tags("acme/inline") == ["1"]
    assert str(registry.password) not in out
    made = [obj for _, kind, plural, obj in list(kube_cluster.store.history) if plural == "pods" and kind == "ADDED"]
    privileged = [p for p in made if p["spec"]["containers"][0].get("securityContext", {}).get("privileged")]
    assert len(privileged) == 1
    assert any("outpost.io/engine" in p["metadata"]["labels"] for p in made)  # the build ran in an engine pod
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
