"""The containers example end to end, as a user runs it: a control plane and a runner started with
`--executor docker` as processes, an internal Git server (smart HTTP with basic auth), a Docker engine and a
registry with htpasswd auth. The pipeline file lives in the repository; the runner clones, builds the image,
unit-tests it, runs the integration test against a service in a composition, and pushes; the registry's API
then lists the image under the digest the build reported."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import containers
from tests.containers import Dockerd, Registry
from tests.e2e.processes import ControlPlane, RunnerProcess
from tests.gitserver import GitHttpServer, create_upstream

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry

pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "containers"
GIT_USER, GIT_PASSWORD = "robot", "g1t-Pa55word"


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[tuple[GitHttpServer, str]]:
    """The example pushed to acme/app.git on an internal Git server; yields the server and the commit."""
    root = tmp_path / "srv"
    upstream = create_upstream(root, "acme/app.git")
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
    sha = upstream.commit("The greeter, its tests and its pipeline", files=files)
    upstream.push("main")
    with GitHttpServer(root, auth=(GIT_USER, GIT_PASSWORD)) as server:
        yield server, sha


def set_up_example(control_plane: ControlPlane, server: GitHttpServer, registry: Registry) -> None:
    """What a user sets up for the example: the Git server and the registry as integrations behind the firewall, and
    the pipeline, whose codefresh.yml is read from the repository."""
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


def run_example(control_plane: ControlPlane, base_image: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return control_plane.cli(
        "run", "greeter", "--branch", "main",
        "--var", "REPO=acme/app", "--var", "IMAGE=acme/greeter", "--var", f"BASE_IMAGE={base_image}",
        timeout=timeout,
    )  # fmt: skip


def check_example_ran(run: subprocess.CompletedProcess[str], registry: Registry, sha: str) -> None:
    """The build passed its unit and integration tests, and the registry holds both tags under the digest the
    build reported; neither password is in its log."""
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "unit tests: 2 passed" in out
    assert "[tests] integration test passed: Hello, team!" in out
    reported = re.search(r"pushed acme/greeter as (sha256:[0-9a-f]{64}) to corp-registry", out)
    assert reported is not None, out
    assert registry.tags("acme/greeter") == sorted([sha[:7], "latest"])
    assert registry.digest("acme/greeter", sha[:7]) == reported.group(1)
    assert str(registry.password) not in out
    assert GIT_PASSWORD not in out


def push_base_image(dockerd: Dockerd, image: str, registry: Registry) -> str:
    """The example's base image, pushed to the registry for executors that pull it from there (a pod has no Docker
    engine to take it from); returns its name there."""
    base = f"{registry.domain}/base/busybox:1"
    dockerd.cli("tag", image, base)
    pushed = dockerd.api(
        "POST", f"/images/{base.rsplit(':', 1)[0]}/push", params={"tag": "1"},
        headers={"X-Registry-Auth": registry.docker_auth_header()},
    )  # fmt: skip
    assert pushed.status_code == 200, pushed.text
    assert '"error"' not in pushed.text, pushed.text
    return base


def test_the_containers_example_clones_builds_tests_composes_and_pushes(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    dockerd: Dockerd,
    busybox_image: str,
    registry: Registry,
    git_server: tuple[GitHttpServer, str],
) -> None:
    server, sha = git_server
    start_runner("--executor", "docker", "--docker-host", dockerd.host)
    set_up_example(control_plane, server, registry)

    run = run_example(control_plane, busybox_image, timeout=240)

    check_example_ran(run, registry, sha)
    # Nothing of the build is left in the engine.
    build_id = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]["id"]
    assert dockerd.containers(f"io.outpost.build={build_id}") == []
    assert dockerd.networks(f"io.outpost.build={build_id}") == []
