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


def _copy_into(root: Path, path: Path, target: Path | None = None) -> None:
    target = target or root / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path.resolve(), target)


ENGINE_IMAGE = "localhost/outpost-test/engine:1"
# Imported lazily by what the engine uses (connections, TLS, the event loop), so not found by tracing imports.
ENGINE_EXTRA = ("anyio", "sniffio", "certifi", "h11", "httpcore", "httpcore2", "h2", "hpack", "hyperframe", "uvloop",
                "cffi", "pycparser", "_yaml", "truststore")  # fmt: skip
# Parts of the standard library the engine never uses: tests, GUIs, installers.
STDLIB_LEFT_OUT = ("test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "distutils")
TRACE = """
import importlib, json, pkgutil, sys
for name in ("outpost.runner", "outpost.engine", "outpost.executors", "outpost.deploy", "outpost.containers",
             "outpost.pipelines"):
    for found in pkgutil.walk_packages(importlib.import_module(name).__path__, name + "."):
        importlib.import_module(found.name)
import outpost.cli, outpost.cli.agent
import httpx, httpx2, ssl
httpx.AsyncClient(); httpx2.AsyncClient(verify=ssl.create_default_context())  # what they import for TLS
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})))
"""


@pytest.fixture(scope="session")
def engine_image(dockerd: Any) -> str:
    """The engine test image (`build_engine_image`), built once a session."""
    return build_engine_image(dockerd)


def build_engine_image(dockerd: Any) -> str:
    """An image for engine pods (there is no registry with Python images here): FROM scratch, with this machine's
    Python at the path it was built for (its standard library beside it), the libraries `ldd` names for it and for
    every extension module, the site packages the runner's code imports (traced), and `src/outpost` itself. Runs
    `python3 -m outpost.runner.enginepod` and `outpost`."""
    import json
    import sys
    import sysconfig

    need_kubernetes_packages()
    executable = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    traced = json.loads(subprocess.run([sys.executable, "-c", TRACE], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    tops = {Path(f).relative_to(site).parts[0] for f in traced if Path(f).is_relative_to(site)}
    tops |= {name for name in ENGINE_EXTRA if (site / name).exists()}
    tops.discard("outpost")
    tops = {t for t in tops if not t.startswith("_distutils_hack")}
    with tempfile.TemporaryDirectory(prefix="outpost-engine-image-") as folder:
        root = Path(folder)
        _copy_into(root, executable)
        for library in Path(sysconfig.get_config_var("LIBDIR") or "/").glob("libpython3*.so*"):
            _copy_into(root, library)
        shutil.copytree(stdlib, root / stdlib.relative_to("/"), symlinks=True,
                        ignore=lambda d, names: [n for n in names if (Path(d) == stdlib and n in STDLIB_LEFT_OUT)
                                                 or n.startswith("config-")])  # fmt: skip
        target = root / (stdlib / "site-packages").relative_to("/")
        for top in sorted(tops):
            source = site / top
            if source.is_dir():
                shutil.copytree(source, target / top, symlinks=True)
            else:
                _copy_into(root, source, target / top)
        for metadata in site.glob("*.dist-info"):  # some packages read their own version (httpx2 does)
            shutil.copytree(metadata, target / metadata.name, symlinks=True)
        shutil.copytree(Path(__file__).resolve().parents[2] / "src" / "outpost", target / "outpost",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        tools = _add_git(root)
        libraries: set[str] = set()
        for binary in [executable, *tools, *root.rglob("*.so"), *root.rglob("*.so.*")]:
            linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
            libraries |= {w for w in linked.split() if w.startswith("/")}
        for linked_library in sorted(libraries):
            if not (root / linked_library.lstrip("/")).exists():
                _copy_into(root, Path(linked_library))
        bin_dir = root / "usr" / "local" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python3").symlink_to(executable)
        (bin_dir / "outpost").write_text("#!/usr/local/bin/python3\nimport sys\nfrom outpost.cli import main\n"
                                         "sys.exit(main())\n")  # fmt: skip
        (bin_dir / "outpost").chmod(0o755)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        (root / "tmp").mkdir()
        os.chmod(root / "tmp", 0o1777)
        (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\nENV PATH=/usr/local/bin:/usr/bin:/bin\n")
        (root / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
        dockerd.cli("build", "-q", "--network", "host", "-t", ENGINE_IMAGE, folder)
    return ENGINE_IMAGE


def _add_git(root: Path) -> list[Path]:
    """What a git-clone step (and reading codefresh.yml from the repository) runs in an engine pod: this machine's
    `git`, also in its exec path (git runs its own builtins from there: fetch-pack, index-pack), the smart-HTTP helper
    `git-remote-http` (`-https` is a link to it), the repository templates (else every clone warns), the CA bundle
    libcurl reads, and a `/bin/sh` (busybox) for the GIT_ASKPASS script that hands git its credentials. Returns the
    binaries, whose libraries the caller copies."""
    git = shutil.which("git")
    need(git is not None, "git is not installed (apt-get install git)")
    assert git is not None
    exec_path = Path(subprocess.run([git, "--exec-path"], capture_output=True, text=True, check=True).stdout.strip())
    _copy_into(root, Path(git), root / "usr" / "bin" / "git")
    (root / exec_path.relative_to("/")).mkdir(parents=True, exist_ok=True)
    (root / exec_path.relative_to("/") / "git").symlink_to("/usr/bin/git")
    helper = exec_path / "git-remote-http"
    _copy_into(root, helper)
    (root / exec_path.relative_to("/") / "git-remote-https").symlink_to("git-remote-http")
    templates = Path("/usr/share/git-core/templates")
    if templates.is_dir():
        shutil.copytree(templates, root / templates.relative_to("/"), symlinks=True)
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        _copy_into(root, bundle)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    return [Path(git), helper, Path(shutil.which("busybox") or "/bin/busybox")]


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
