"""Daemonless image builds with buildah: what a runner without a Docker engine (a Kubernetes pod, say) builds and
pushes with, using no privileged Docker-in-Docker.

Every `Buildah` keeps its own world under one folder: image storage (vfs driver), run state, temporary files, an
empty home and, per command, a private registries.conf and auth file. The host's registry configuration and
credentials (/etc/containers/registries.conf*, storage.conf, ~/.docker/config.json, containers/auth.json) are never
read or written.
Passwords go to buildah only through that auth file (mode 0600), never on a command line where `ps` would show them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path

from outpost.containers.auth import RegistryAuth
from outpost.errors import ExecutorError

Output = Callable[[bytes], Awaitable[None]]

INSTALL_HINT = "buildah is not installed on this runner (apt-get install buildah)"
KILL_AFTER = 3.0  # seconds between SIGTERM and SIGKILL for a cancelled command
_TAIL = 16 * 1024  # bytes of output kept for error messages
_REFUSED = re.compile(rb"authentication required|unauthorized", re.IGNORECASE)
_NOT_KNOWN = re.compile(rb"image not known|no such image|image not found", re.IGNORECASE)
_DOCKER_REF = re.compile(r"docker://([^/\s\"']+)/")


class BuildahError(ExecutorError):
    """A buildah command failed, or buildah is missing."""


class Buildah:
    """buildah with its own storage (vfs driver, chroot isolation: no daemon, no privileges beyond what buildah
    needs). Image ids are returned in Docker's form, "sha256:<hex>"."""

    def __init__(self, root: Path, *, binary: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.binary = binary or shutil.which("buildah") or _first_executable("/usr/bin/buildah", "/usr/sbin/buildah")
        self._env = dict(os.environ if env is None else env)

    @staticmethod
    def installed() -> bool:
        return bool(shutil.which("buildah") or _first_executable("/usr/bin/buildah", "/usr/sbin/buildah"))

    # --- commands -----------------------------------------------------------------------------------------------

    async def build(
        self,
        context: Path,
        *,
        dockerfile: str = "Dockerfile",
        dockerfile_content: str | None = None,
        tags: Sequence[str],
        build_args: Mapping[str, str] = {},
        target: str | None = None,
        no_cache: bool = False,
        labels: Mapping[str, str] = {},
        auths: Sequence[RegistryAuth] = (),
        output: Output,
    ) -> str:
        """Builds `context` and returns the image id as "sha256:<hex>". `dockerfile` is a path inside the context;
        `dockerfile_content`, when given, is used instead of any file. `auths` log in to the registries that FROM
        lines pull from (insecure ones are reached over plain HTTP)."""
        with self._session(auths) as session:
            context, file = _dockerfile(context, dockerfile, dockerfile_content, session)
            iidfile = session / "iid"
            args = ["build", "--isolation", "chroot", "--network", "host", "--force-rm"]
            if not no_cache:  # a layer per instruction: slower once, reused by the builds that follow
                args.append("--layers")
            args += ["--authfile", str(session / "auth.json"), "--iidfile", str(iidfile), "-f", str(file)]
            for key, value in build_args.items():
                args += ["--build-arg", f"{key}={value}"]
            for key, value in labels.items():
                args += ["--label", f"{key}={value}"]
            for tag in tags:
                args += ["-t", tag]
            if target:
                args += ["--target", target]
            if no_cache:
                args.append("--no-cache")
            args.append(str(context))
            await self._check(args, session, output, auths)
            return _image_id(iidfile.read_text().strip())

    async def push(self, image: str, destination: str, *, auth: RegistryAuth | None = None, output: Output) -> str:
        """Pushes a local image to `destination` (HOST[:PORT]/REPO:TAG, optionally with a docker:// prefix) and
        returns the manifest digest the registry stores, "sha256:<hex>"."""
        reference = destination.removeprefix("docker://")
        auths = [auth] if auth else []
        with self._session(auths) as session:
            digestfile = session / "digest"
            args = ["push", "--authfile", str(session / "auth.json"), "--digestfile", str(digestfile)]
            if auth and auth.insecure:
                args.append("--tls-verify=false")
            args += [image, f"docker://{reference}"]
            await self._check(args, session, output, auths, domain=reference.split("/", 1)[0])
            return digestfile.read_text().strip()

    async def to_archive(self, image: str, archive: Path, *, output: Output) -> None:
        """Writes a local image, named as it is here, into a `docker load` tar archive. (buildah 1.28's
        `docker-daemon:` transport loses the connection to Docker 20.10 mid-blob; an archive does not.)"""
        with self._session(()) as session:
            await self._check(["push", image, f"docker-archive:{archive}:{image}"], session, output, ())

    async def remove(self, image: str) -> None:
        """Removes a local image (or one of its names); an image that is not there is fine."""
        with self._session(()) as session:
            code, tail = await self._run(["rmi", image], session, _discard)
        if code != 0 and not _NOT_KNOWN.search(tail):
            raise _failure(["rmi"], code, tail, (), None)

    async def images(self) -> list[str]:
        """The names of the local images (untagged images have none and are not listed)."""
        collected = bytearray()

        async def collect(chunk: bytes) -> None:
            collected.extend(chunk)

        with self._session(()) as session:
            await self._check(["images", "--json"], session, collect, ())
        listed: list[dict[str, list[str] | None]] = json.loads(bytes(collected) or b"[]")
        return sorted(name for image in listed for name in image.get("names") or [])

    # --- plumbing -----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self, auths: Sequence[RegistryAuth]) -> Iterator[Path]:
        """A private folder for one command: its auth file and its registries.conf (which marks insecure
        registries), removed afterwards."""
        for sub in ("storage", "run", "tmp", "calls", "home", "xdg-run", "registries.conf.d"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        session = Path(tempfile.mkdtemp(dir=self.root / "calls"))  # mode 0700
        try:
            _write_private(session / "auth.json", json.dumps({"auths": _auth_entries(auths)}))
            _write_private(session / "registries.conf", _registries_conf(auths))
            yield session
        finally:
            shutil.rmtree(session, ignore_errors=True)

    def _argv(self, args: Sequence[str], session: Path) -> list[str]:
        if self.binary is None:
            raise BuildahError(INSTALL_HINT)
        return [
            self.binary,
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "vfs",
            "--registries-conf", str(session / "registries.conf"),
            "--registries-conf-dir", str(self.root / "registries.conf.d"),
            "--short-name-alias-conf", str(self.root / "short-name-aliases.conf"),
            *args,
        ]  # fmt: skip

    def _environment(self, session: Path) -> dict[str, str]:
        storage_conf = self.root / "storage.conf"
        if not storage_conf.exists():  # so that /etc/containers/storage.conf is not read either
            _write_private(
                storage_conf,
                f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root / "storage"}"\nrunroot = "{self.root / "run"}"\n',
            )
        home = self.root / "home"
        return {
            **self._env,
            # Even with --authfile, buildah falls back to ~/.docker/config.json and $XDG_CONFIG_HOME's auth.json for
            # registries the file does not name: an empty home of our own keeps the host's credentials out.
            "HOME": str(home),
            "DOCKER_CONFIG": str(home / ".docker"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_RUNTIME_DIR": str(self.root / "xdg-run"),
            "REGISTRY_AUTH_FILE": str(session / "auth.json"),
            "CONTAINERS_REGISTRIES_CONF": str(session / "registries.conf"),
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "BUILDAH_ISOLATION": "chroot",
            "TMPDIR": str(self.root / "tmp"),  # vfs copies whole layers through here
        }

    async def _check(
        self,
        args: Sequence[str],
        session: Path,
        output: Output,
        auths: Sequence[RegistryAuth],
        *,
        domain: str | None = None,
    ) -> None:
        code, tail = await self._run(args, session, output)
        if code != 0:
            raise _failure(args, code, tail, auths, domain)

    async def _run(self, args: Sequence[str], session: Path, output: Output) -> tuple[int, bytes]:
        """Runs one buildah command in a process group of its own; returns its exit code and its output's tail.
        A cancel ends the whole group before it propagates."""
        argv = self._argv(args, session)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._environment(session),
                start_new_session=True,
            )
        except FileNotFoundError:
            raise BuildahError(INSTALL_HINT) from None
        try:
            tail = await _pump(process, output)
            return await process.wait(), tail
        except BaseException:
            await _stop(process)
            raise


async def _discard(chunk: bytes) -> None:
    pass


async def _pump(process: asyncio.subprocess.Process, output: Output) -> bytes:
    """Streams the process's merged output to `output` as it arrives; returns the last bytes of it."""
    assert process.stdout is not None
    tail = b""
    while chunk := await process.stdout.read(64 * 1024):
        await output(chunk)
        tail = (tail + chunk)[-_TAIL:]
    return tail


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Ends the process's whole group: SIGTERM (buildah then removes its working container, thanks to --force-rm),
    SIGKILL after KILL_AFTER seconds, or at once if this wait is cancelled too."""
    try:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_AFTER):
                    await process.wait()
    finally:
        # Also sweeps children still in the group after buildah itself has gone.
        _signal_group(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await asyncio.shield(process.wait())
        if process.stdout is not None:  # let the pipe see its end, so the transport closes
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(1.0):
                    await process.stdout.read()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _failure(
    args: Sequence[str], code: int, tail: bytes, auths: Sequence[RegistryAuth], domain: str | None
) -> BuildahError:
    lines = [line.strip() for line in tail.decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else "(no output)"
    command = "buildah " + shlex.join(args[:1])
    if _REFUSED.search(tail):
        domain = domain or _refusing_domain(last, lines, auths)
        given = any(auth.domain == domain and auth.username for auth in auths)
        if given:
            return BuildahError(f"{command} failed: the registry refused the credentials for {domain} ({last})")
        return BuildahError(f"{command} failed: the registry {domain} wants credentials and none were given ({last})")
    return BuildahError(f"{command} failed with exit code {code}: {last}")


def _refusing_domain(last: str, lines: Sequence[str], auths: Sequence[RegistryAuth]) -> str:
    for line in [last, *reversed(lines)]:
        for auth in auths:
            if auth.domain in line:
                return auth.domain
        if found := _DOCKER_REF.search(line):
            return found.group(1)
    return "the registry"


def _dockerfile(context: Path, dockerfile: str, content: str | None, session: Path) -> tuple[Path, Path]:
    """The resolved context and the Dockerfile to build with: inline content goes to the session's private folder
    (outside the context); a named file must stay inside the context (no ../, absolute paths or symlinks out)."""
    context = context.resolve()
    if not context.is_dir():
        raise BuildahError(f"the build context {context} is not a folder")
    if content is not None:
        (session / "Dockerfile").write_text(content)
        return context, session / "Dockerfile"
    file = (context / dockerfile).resolve()
    if not file.is_relative_to(context):
        raise BuildahError(f"the Dockerfile {dockerfile!r} is outside the build context")
    if not file.is_file():
        raise BuildahError(f"no Dockerfile {dockerfile!r} in the build context")
    return context, file


def _image_id(text: str) -> str:
    if not re.fullmatch(r"(sha256:)?[0-9a-f]{64}", text):
        raise BuildahError(f"buildah wrote an unexpected image id: {text!r}")
    return text if text.startswith("sha256:") else f"sha256:{text}"


def _auth_entries(auths: Sequence[RegistryAuth]) -> dict[str, dict[str, str]]:
    return {
        auth.domain: {"auth": base64.b64encode(f"{auth.username}:{auth.password or ''}".encode()).decode()}
        for auth in auths
        if auth.username
    }


def _registries_conf(auths: Sequence[RegistryAuth]) -> str:
    """No search registries (short names do not reach out anywhere); insecure registries over plain HTTP."""
    text = 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n'
    for auth in auths:
        if auth.insecure:
            text += f"\n[[registry]]\nlocation = {json.dumps(auth.domain)}\ninsecure = true\n"
    return text


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _first_executable(*paths: str) -> str | None:
    return next((path for path in paths if os.access(path, os.X_OK)), None)
