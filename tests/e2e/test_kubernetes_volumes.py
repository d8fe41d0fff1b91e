"""Volume reuse on the Kubernetes executor, end to end: a real control plane, an internal Git server and a real
`outpost runner start --executor kubernetes --concurrency 2` process against the test cluster. Builds of one pipeline
in a row share the checkout (the clone is refreshed, and what steps cached beside it in ignored files is there for
the next build, read by the next build's step pods); two builds at once get different volumes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import containers
from tests.e2e.kubernetes import start_kubernetes_runner
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.gitserver import GitHttpServer, create_upstream
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster = containers.dockerd, containers.busybox_image, fixtures.kube_cluster

pytestmark = pytest.mark.timeout(300)
GIT_USER, GIT_PASSWORD = "robot", "g1t-Pa55word"

PIPELINE = """version: '1.0'
steps:
  main_clone:
    type: git-clone
    repo: acme/app
    revision: main
  cache:
    image: {image}
    commands:
      - echo "build $CF_BUILD_ID in $(pwd)"
      - if [ "$WAIT" = yes ]; then touch /codefresh/volume/waiting; fi
      - while [ ! -f /codefresh/volume/go ] && [ "$WAIT" = yes ]; do sleep 0.2; done
      - mkdir -p cache && touch "cache/$CF_BUILD_ID"
      - echo "cached:" $(ls cache | sort)
"""


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHttpServer]:
    root = tmp_path / "srv"
    upstream = create_upstream(root, "acme/app.git")
    upstream.commit("An app whose dependency cache is ignored", files={".gitignore": "cache/\n", "app.sh": "true\n"})
    upstream.push("main")
    with GitHttpServer(root, auth=(GIT_USER, GIT_PASSWORD)) as server:
        yield server


def test_builds_in_a_row_share_the_checkout_and_builds_at_once_get_different_volumes(
    tmp_path: Path,
    control_plane: ControlPlane,
    start_runner: Callable[..., RunnerProcess],
    kube_cluster: Any,
    busybox_image: str,
    git_server: GitHttpServer,
) -> None:
    start_kubernetes_runner(start_runner, kube_cluster, "--concurrency", "2")
    add = control_plane.cli(
        "integration", "add", "git", "corp-git", "--provider", "git", "--url", git_server.url,
        "--username", GIT_USER, "--password", GIT_PASSWORD, "--behind-firewall", "--default",
    )  # fmt: skip
    assert add.returncode == 0, add.stdout + add.stderr
    (tmp_path / "p.yml").write_text(PIPELINE.format(image=busybox_image))
    assert control_plane.cli("pipeline", "create", "app", "--file", str(tmp_path / "p.yml")).returncode == 0

    first, second = (run_build(control_plane) for _ in range(2))  # one after the other

    assert "Cloning into" in first.log
    assert "Cloning into" not in second.log  # the checkout was there: fetched, not cloned again
    assert cached(first.log) == [first.id]
    assert cached(second.log) == sorted([first.id, second.id])  # the first build's cache, read by a new pod

    # Two at once: each step waits until the test has seen both running, so the builds overlap for sure.
    claim = kube_cluster.claim_folder()
    together: list[Build] = []
    runs = [threading.Thread(target=lambda: together.append(run_build(control_plane, WAIT="yes"))) for _ in "ab"]
    for thread in runs:
        thread.start()
    waiting = eventually(lambda: _two_volumes_in_use(claim), timeout=120, what="two builds' steps to be running")
    for volume in waiting:
        (volume / "go").touch()
    for thread in runs:
        thread.join(180)
    assert len(together) == 2
    assert all(build.status == "success" for build in together), [b.log for b in together]
    kept, fresh = sorted(together, key=lambda b: len(cached(b.log)), reverse=True)
    assert cached(kept.log) == sorted([first.id, second.id, kept.id])  # the pipeline's volume
    assert cached(fresh.log) == [fresh.id]  # a volume of its own, cloned afresh
    assert "Cloning into" in fresh.log
    assert kube_cluster.pods() == []


class Build:
    def __init__(self, build_id: str, status: str, log: str) -> None:
        self.id, self.status, self.log = build_id, status, log


def run_build(control_plane: ControlPlane, **variables: str) -> Build:
    pairs = [arg for name, value in variables.items() for arg in ("--var", f"{name}={value}")]
    done = control_plane.cli("run", "app", "--branch", "main", *pairs, timeout=180)
    line = next(line for line in done.stdout.splitlines() if line.startswith("build "))
    build_id = line.split()[1]
    shown = json.loads(control_plane.cli("build", "show", build_id, "--json").stdout)
    return Build(build_id, shown["status"], done.stdout + done.stderr)


def cached(log: str) -> list[str]:
    line = next(line for line in log.splitlines() if line.startswith("cached:"))
    return line.split()[1:]


def _two_volumes_in_use(claim: Path) -> list[Path] | None:
    """The build volumes (in the runner's folder on the work claim) whose step waits for the test's go-ahead."""
    volumes = [waiting.parent for waiting in claim.glob("runner/**/waiting")]
    return volumes if len(volumes) == 2 else None
