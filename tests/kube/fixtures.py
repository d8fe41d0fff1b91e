"""Fixtures of the test cluster, importable without its dependencies: a missing one skips (fails under CI=true)."""

from __future__ import annotations

import importlib.util
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
