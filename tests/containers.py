"""Real container components the tests start: a Docker engine, a Docker registry with htpasswd auth, and base
images made here (there is no Docker Hub on these machines).

The fixtures are module attributes; a test module takes the ones it needs, e.g.
`dockerd, busybox_image = containers.dockerd, containers.busybox_image`.

- `dockerd` (session): `dockerd` on its own unix socket, data root and exec root; `--bridge=none --iptables=false`
  as the machine's recipe says (user-defined bridge networks, and their DNS, still work); privileged containers
  run with the runtime `outpost-privileged` (runc within this machine's capability bounding set).
- `busybox_image` (session): `localhost/busybox:1`, FROM scratch with Debian's static busybox, in that engine.
- `registry` / `open_registry` (function): Debian's `docker-registry` (distribution v2) on a free loopback port,
  with htpasswd (bcrypt) auth or without.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.components import free_port, need

START_TIMEOUT = 30.0
BUSYBOX_IMAGE = "localhost/busybox:1"
PRIVILEGED_RUNTIME = "outpost-privileged"  # for privileged containers: runc within this machine's bounding set
REGISTRY_USER, REGISTRY_PASSWORD = "ci", "s3cret-Regi5try"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A server in its own process group, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str, *, on_timeout: Callable[[], None]
) -> None:
    """Waits for a server to answer; its log's tail in the error if it exits or stays silent."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            on_timeout()
            raise TimeoutError(f"{what} did not answer within {START_TIMEOUT:g}s")
        time.sleep(0.05)


# --- the Docker engine ------------------------------------------------------------------------------------------


@dataclass
class Dockerd:
    """A running Docker engine of the tests' own."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def host(self) -> str:
        """The value for DOCKER_HOST."""
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """An environment for the docker CLI that talks to this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def cli(self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None) -> str:
        """Runs the docker CLI against this engine; returns stdout."""
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, timeout=timeout, check=False, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}")
        return done.stdout.decode()

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One request to the engine's API (for assertions: what exists, what is left behind)."""
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://docker", timeout=30) as client:
            return client.request(method, path, **kwargs)  # type: ignore[arg-type]

    def containers(self, label: str | None = None) -> list[dict[str, object]]:
        """Every container (running or not), optionally only those with a label `key` or `key=value`."""
        params: dict[str, str] = {"all": "1"}
        if label:
            params["filters"] = json.dumps({"label": [label]})
        found: list[dict[str, object]] = self.api("GET", "/containers/json", params=params).json()
        return found

    def networks(self, label: str | None = None) -> list[dict[str, object]]:
        params = {"filters": json.dumps({"label": [label]})} if label else {}
        found: list[dict[str, object]] = self.api("GET", "/networks", params=params).json()
        return found

    def start(self) -> Dockerd:
        binary = _binary("dockerd")
        need(binary is not None, "dockerd is not installed (apt-get install docker.io)")
        need(os.geteuid() == 0, "dockerd needs root")
        need(shutil.which("docker") is not None, "the docker CLI is not installed (apt-get install docker.io)")
        assert binary is not None
        for sub in ("root", "exec"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--data-root", str(self.folder / "root"),
            "--exec-root", str(self.folder / "exec"),
            "--pidfile", str(self.folder / "dockerd.pid"),
            "-H", self.host,
            "--iptables=false", "--ip-masq=false", "--bridge=none",
            "--storage-driver=overlay2",
            "--add-runtime", f"{PRIVILEGED_RUNTIME}={self._privileged_runc()}",
        ]  # fmt: skip
        self.process = _spawn(command, self.folder / "dockerd.log")

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError, OSError):
                return self.socket.exists() and self.api("GET", "/_ping").status_code == 200
            return False

        _wait_until(ready, self.process, self.folder / "dockerd.log", "dockerd", on_timeout=self.stop)
        return self

    def _privileged_runc(self) -> Path:
        """The runtime of privileged pods' containers (see tests/kube/runc_privileged.py for why)."""
        runc = _binary("runc") or "/usr/sbin/runc"
        wrapper = Path(__file__).parent / "kube" / "runc_privileged.py"
        shim = self.folder / "runc-privileged"
        shim.write_text(f'#!/bin/sh\nOUTPOST_TEST_RUNC={runc} exec {sys.executable} -I {wrapper} "$@"\n')
        shim.chmod(0o755)
        return shim

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError, OSError):  # containers first, quickly
                for container in self.containers():
                    self.api("DELETE", f"/containers/{container['Id']}", params={"force": "1"})
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        # dockerd leaves mounts under its roots (the default netns, overlay layers); unmount before removing.
        mounts = Path("/proc/mounts").read_text().splitlines()
        ours = sorted((m.split()[1] for m in mounts if m.split()[1].startswith(str(self.folder))), reverse=True)
        for mount in ours:
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True, timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


def make_busybox_image(engine: Dockerd, tag: str = BUSYBOX_IMAGE) -> str:
    """A tiny base image: FROM scratch, Debian's static busybox, its applets linked into /bin."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    need(os.access(busybox, os.X_OK), "busybox is not installed (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory(prefix="outpost-busybox-") as folder:
        shutil.copy(busybox, Path(folder) / "busybox")
        (Path(folder) / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            "ENV PATH=/usr/local/bin:/usr/bin:/bin\n"
            'CMD ["/bin/sh"]\n'
        )
        engine.cli("build", "-q", "--network", "host", "-t", tag, folder)
    return tag


# --- the registry ---------------------------------------------------------------------------------------------


@dataclass
class Registry:
    """Debian's docker-registry on loopback; `username`/`password` are None for an open one."""

    folder: Path
    port: int
    username: str | None = None
    password: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.domain}"

    def _client(self) -> httpx.Client:
        auth = (self.username, self.password) if self.username and self.password else None
        return httpx.Client(base_url=self.url, auth=auth, timeout=10)

    def catalog(self) -> list[str]:
        with self._client() as client:
            repositories: list[str] = client.get("/v2/_catalog").raise_for_status().json().get("repositories") or []
            return repositories

    def tags(self, repository: str) -> list[str]:
        with self._client() as client:
            answer = client.get(f"/v2/{repository}/tags/list")
            if answer.status_code == 404:
                return []
            tags: list[str] = answer.raise_for_status().json().get("tags") or []
            return sorted(tags)

    def digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest the registry gives for repository:reference, None if it has no such manifest."""
        with self._client() as client:
            answer = client.head(f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
            if answer.status_code == 404:
                return None
            answer.raise_for_status()
            return answer.headers.get("Docker-Content-Digest")

    def docker_auth_header(self) -> str:
        """An X-Registry-Auth value for the Docker API."""
        payload = {"username": self.username or "", "password": self.password or "", "serveraddress": self.domain}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()

    def start(self) -> Registry:
        binary = _binary("docker-registry")
        need(binary is not None, "docker-registry is not installed (apt-get install docker-registry)")
        assert binary is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.username:
            htpasswd = _binary("htpasswd")
            need(htpasswd is not None, "htpasswd is not installed (apt-get install apache2-utils)")
            assert htpasswd is not None
            assert self.password is not None
            line = subprocess.run(
                [htpasswd, "-Bbn", self.username, self.password], capture_output=True, check=True, timeout=30
            ).stdout
            (self.folder / "htpasswd").write_bytes(line)
            auth = f"auth: {{htpasswd: {{realm: outpost-tests, path: {self.folder / 'htpasswd'}}}}}\n"
        config = self.folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.folder / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{self.domain}'}}\n" + auth
        )
        self.process = _spawn([binary, "serve", str(config)], self.folder / "registry.log")

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401)
            return False

        _wait_until(ready, self.process, self.folder / "registry.log", "docker-registry", on_timeout=self.stop)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None


# --- buildah ----------------------------------------------------------------------------------------------------


def need_buildah() -> str:
    binary = _binary("buildah")
    need(binary is not None, "buildah is not installed (apt-get install buildah)")
    assert binary is not None
    return binary


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    # Not under pytest's temporary folders: dockerd's overlay mounts must be gone before anything removes them.
    engine = Dockerd(Path(tempfile.mkdtemp(prefix="outpost-dockerd-"))).start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def busybox_image(dockerd: Dockerd) -> str:
    return make_busybox_image(dockerd)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry that wants user `ci` with password `s3cret-Regi5try`."""
    running = Registry(tmp_path / "registry", free_port(), REGISTRY_USER, REGISTRY_PASSWORD).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def open_registry(tmp_path: Path) -> Iterator[Registry]:
    running = Registry(tmp_path / "open-registry", free_port()).start()
    try:
        yield running
    finally:
        running.stop()
