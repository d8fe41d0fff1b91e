"""The containers example, unchanged, on the Kubernetes executor: a real control plane and `outpost runner start
--executor kubernetes` against the test cluster, an internal Git server and a registry with htpasswd auth. The
`build` step runs buildah in a builder pod (no privileged Docker-in-Docker) and pushes to a scratch repository that
the nodes pull from; the unit tests run in a pod of the image built; the composition's service and candidate are pods
of their own (the candidate reaches the service by name); the push step's builder pod pushes the tags; the registry
then lists them under the digest the build reported. Once with the engine in the runner, once in an engine pod
(`--engine-image`), which clones, reads codefresh.yml and creates every pod itself."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest

from tests import containers
from tests.containers import Dockerd, Registry
from tests.e2e.kubernetes import start_kubernetes_runner
from tests.e2e.processes import ControlPlane, RunnerProcess, eventually
from tests.e2e.test_containers import (
    GIT_PASSWORD,
    check_example_ran,
    git_server,
    push_base_image,
    run_example,
    set_up_example,
)
from tests.gitserver import GitHttpServer
from tests.kube import fixtures

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry
kube_cluster, buildah_image, engine_image = fixtures.kube_cluster, fixtures.buildah_image, fixtures.engine_image
__all__ = ["git_server"]

pytestmark = pytest.mark.timeout(400)

ENGINE = "outpost.io/engine"


@contextmanager
def engine_log(builds: Path) -> Iterator[list[IO[bytes]]]:
    """The engine pod's own log file (engine.log in the build folder), opened as soon as it appears and kept open:
    the runner removes the folder with the build, and the open file can still be read to its end afterwards."""
    opened: list[IO[bytes]] = []
    done = threading.Event()

    def follow() -> None:
        deadline = time.monotonic() + 300
        while not done.is_set() and time.monotonic() < deadline:
            for found in builds.glob("*/engine.log"):
                try:
                    opened.append(open(found, "rb"))  # noqa: SIM115 - closed below, after the build
                except OSError:
                    continue
                return
            done.wait(0.05)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        yield opened
    finally:
        done.set()
        follower.join(5)
        for f in opened:
            f.close()


@pytest.mark.parametrize("in_engine_pod", [False, True], ids=["engine-in-runner", "engine-pod"])
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
    request: pytest.FixtureRequest,
    in_engine_pod: bool,
) -> None:
    server, sha = git_server
    base = push_base_image(dockerd, busybox_image, registry)  # a builder pod has no Docker engine to take it from
    engine = ("--engine-image", request.getfixturevalue("engine_image")) if in_engine_pod else ()
    runner = start_kubernetes_runner(
        start_runner, kube_cluster,
        "--builder-image", buildah_image, "--scratch-registry", f"{registry.domain}/outpost-scratch", *engine,
    )  # fmt: skip
    set_up_example(control_plane, server, registry)

    with engine_log(kube_cluster.claim_folder() / "runner" / "builds") as engine_logs:
        run = run_example(control_plane, base, timeout=360)
        eventually(lambda: kube_cluster.pods() == [], timeout=30, what="every pod of the build to be removed")
        engine_said = b"".join(f.read() for f in engine_logs).decode(errors="replace")

    check_example_ran(run, registry, sha)
    assert "building in a builder pod with buildah" in run.stdout
    passwords = (str(registry.password), GIT_PASSWORD)
    assert not any(p in runner.output() for p in passwords)
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
    assert not any(p in json.dumps(made) for p in passwords)  # no secret in any pod spec
    engines = [p for p in made if ENGINE in p["metadata"]["labels"]]
    if in_engine_pod:
        assert len(engines) == 1  # the clone, codefresh.yml, and every step's pod: all from the one engine pod
        owner = engines[0]["metadata"]
        assert all(p["metadata"].get("ownerReferences", [{}])[0].get("uid") == owner["uid"]
                   for p in made if p is not engines[0])  # fmt: skip
        assert "engine pod" in engine_said, engine_said
        assert not any(p in engine_said for p in passwords)
        # The engine's Secret: the passwords only in the task (the build's integrations, which the engine must use).
        secrets = [o for _, kind, plural, o in list(kube_cluster.store.history) if plural == "secrets"
                   and kind == "ADDED" and o["metadata"]["name"] == f"{owner['name']}-task"]  # fmt: skip
        assert len(secrets) == 1
        files = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
        assert sorted(files) == ["settings.json", "task.json"]
        assert all(p in files["task.json"] for p in passwords)
        assert not any(p in files["settings.json"] for p in passwords)
    else:
        assert engines == []
    assert kube_cluster.objects("secrets") == []
    # The image storage went with the build: the pipeline's kept volume holds the checkout, not every image built.
    # (A folder of the work claim, or with engine pods a claim of its own: the test cluster keeps claims side by side.)
    claim = kube_cluster.claim_folder()
    kept = [v for v in [*claim.glob("runner/volumes/*"), *claim.parent.glob("vol-*")] if v.is_dir()]
    assert [v for v in kept if (v / "app" / "codefresh.yml").is_file()] != [], kept
    assert [f for v in kept for f in v.glob(".outpost-steps/*")] == []  # buildah's storage, and the steps' files
    builds = claim / "runner" / "builds"
    eventually(lambda: list(builds.glob("*")) == [], timeout=30, what="the build folder to be removed")
    build = json.loads(control_plane.cli("build", "list", "--json").stdout)[0]
    took = datetime.fromisoformat(build["finished_at"]) - datetime.fromisoformat(build["created_at"])
    print(f"the build took {took.total_seconds():.1f}s from its request to its end")  # docs/kubernetes.md
