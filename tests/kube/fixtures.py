"""Fixtures of the test cluster, importable without its dependencies: a missing one skips (fails under CI=true)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.components import need

if TYPE_CHECKING:
    from tests.kube.cluster import Cluster


def need_kubernetes_packages() -> None:
    for module, package in (("lightkube", "lightkube"), ("kubernetes_validate", "kubernetes-validate")):
        need(importlib.util.find_spec(module) is not None, f"{package} is not installed (pip install -e '.[dev]')")


@pytest.fixture
def kube_cluster(tmp_path: Path, dockerd: Any) -> Iterator[Cluster]:
    """A fresh test cluster (API server emulator, scheduler, three fake nodes) running pods on the session's
    Docker engine."""
    need_kubernetes_packages()
    from tests.kube.cluster import Cluster

    cluster = Cluster(tmp_path / "cluster", str(dockerd.socket)).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[Cluster]:
    """The API server emulator alone (with its scheduler, no kubelet): for tests of the API's own behaviour."""
    need_kubernetes_packages()
    from tests.kube.cluster import Cluster

    cluster = Cluster(tmp_path / "cluster", "", kubelets=False).start()
    try:
        yield cluster
    finally:
        cluster.stop()


BUILDAH_IMAGE = "localhost/outpost-test/buildah:1"


@pytest.fixture(scope="session")
def buildah_image(dockerd: Any) -> str:
    """An image with buildah for builder pods, made from this machine's buildah and busybox (there is no image
    registry to pull one from here): the binary, the libraries it links, a user table and the default policy."""
    buildah = shutil.which("buildah")
    need(buildah is not None, "buildah is not installed (apt-get install buildah)")
    assert buildah is not None
    with tempfile.TemporaryDirectory(prefix="outpost-buildah-image-") as folder:
        root = Path(folder)
        _copy_into(root, Path(buildah))
        (root / "bin").mkdir()
        shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
        linked = subprocess.run(["ldd", buildah], capture_output=True, text=True, check=True).stdout
        for library in {w for w in linked.split() if w.startswith("/")}:
            _copy_into(root, Path(library))
        (root / "etc" / "containers").mkdir(parents=True)
        shutil.copy("/etc/containers/policy.json", root / "etc" / "containers" / "policy.json")
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        for tmp in ("tmp", "var/tmp"):  # buildah keeps some temporary files in /var/tmp whatever TMPDIR says
            (root / tmp).mkdir(parents=True)
            os.chmod(root / tmp, 0o1777)
        (root / "Dockerfile").write_text(
            "FROM scratch\nCOPY . /\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "ENV PATH=/usr/local/bin:/usr/bin:/bin\n"
        )
        dockerd.cli("build", "-q", "--network", "host", "-t", BUILDAH_IMAGE, folder)
    return BUILDAH_IMAGE


def _copy_into(root: Path, path: Path) -> None:
    target = root / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path.resolve(), target)


DIND_IMAGE = "localhost/outpost-test/dind:1"
DIND_BINARIES = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker-proxy", "docker-init", "docker")


@pytest.fixture(scope="session")
def dind_image(dockerd: Any) -> str:
    """An image with a Docker engine for the privileged Docker-in-Docker pod, made from this machine's dockerd,
    containerd, runc and docker CLI, the libraries they link, and busybox (no registry to pull one from here). Steps
    can use it too: it has the `docker` command."""
    with tempfile.TemporaryDirectory(prefix="outpost-dind-image-") as folder:
        root = Path(folder)
        for name in DIND_BINARIES:
            found = shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin") if
                                                os.access(f"{d}/{name}", os.X_OK)), None)  # fmt: skip
            need(found is not None, f"{name} is not installed (apt-get install docker.io)")
            assert found is not None
            _copy_into(root, Path(found))
            linked = subprocess.run(["ldd", found], capture_output=True, text=True, check=False).stdout
            for library in {w for w in linked.split() if w.startswith("/")}:
                _copy_into(root, Path(library))
        (root / "bin").mkdir(exist_ok=True)
        shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        for tmp in ("tmp", "var/tmp"):
            (root / tmp).mkdir(parents=True, exist_ok=True)
            os.chmod(root / tmp, 0o1777)
        (root / "Dockerfile").write_text(
            "FROM scratch\nCOPY . /\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        )
        dockerd.cli("build", "-q", "--network", "host", "-t", DIND_IMAGE, folder)
    return DIND_IMAGE
