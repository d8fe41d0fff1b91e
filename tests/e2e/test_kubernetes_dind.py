"""The containers example, unchanged, on the Kubernetes executor with the privileged Docker-in-Docker opt-in: a real
control plane and `outpost runner start --executor kubernetes --docker-in-docker --dind-image …` against the test
cluster, an internal Git server and a registry with htpasswd auth. The build and push steps go through the build's
one dockerd pod; the image also goes to the scratch repository so that the unit tests' and the composition's pods
can pull it. And the same opt-in when the build's engine runs in an engine pod (`--engine-image`), which then makes
the daemon's pod and reaches its socket itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.containers import Dockerd, Registry
from tests.e2e.kubernetes import created_pods, start_kubernetes_runner
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.e2e.test_containers import check_example_ran, git_server, push_base_image, run_example, set_up_example
from tests.gitserver import GitHttpServer
from tests.kube import fixtures

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry
kube_cluster, dind_image, engine_image = fixtures.kube_cluster, fixtures.dind_image, fixtures.engine_image
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
    # The daemon in the pod pulls the base image from the registry, with the integration's login.
    base = push_base_image(dockerd, busybox_image, registry)
    start_kubernetes_runner(
        start_runner, kube_cluster,
        "--docker-in-docker", "--dind-image", dind_image, "--node-name", "node-a",
        "--scratch-registry", f"{registry.domain}/outpost-scratch",
    )  # fmt: skip
    set_up_example(control_plane, server, registry)

    run = run_example(control_plane, base, timeout=360)

    check_example_ran(run, registry, sha)
    assert "building with the build's Docker-in-Docker daemon" in run.stdout
    made = created_pods(kube_cluster)
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
    engine_image: str,
) -> None:
    base = push_base_image(dockerd, busybox_image, registry)
    start_kubernetes_runner(
        start_runner, kube_cluster,
        "--docker-in-docker", "--dind-image", dind_image, "--node-name", "node-a",
        "--scratch-registry", f"{registry.domain}/outpost-scratch", "--engine-image", engine_image,
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
    made = created_pods(kube_cluster)
    privileged = [p for p in made if p["spec"]["containers"][0].get("securityContext", {}).get("privileged")]
    assert len(privileged) == 1
    assert any("outpost.io/engine" in p["metadata"]["labels"] for p in made)  # the build ran in an engine pod
    eventually(lambda: kube_cluster.pods() == [], timeout=30, what="the engine pod to be removed")
