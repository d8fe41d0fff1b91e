"""An async client for the Docker Engine API over its unix socket: the calls the Docker executor needs, no more.

It speaks API 1.41 (Debian 12's docker.io 20.10) through httpx; every failure comes out as DockerError, a 404 as
NotFound. Streaming calls (pull, push, build, output, wait) have no read timeout and close their response when
cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Self
from urllib.parse import quote

import httpx

from outpost.containers.auth import RegistryAuth
from outpost.containers.buildcontext import INLINE_DOCKERFILE as INLINE_DOCKERFILE
from outpost.containers.buildcontext import ContextError, context_tar
from outpost.errors import ExecutorError

API_PREFIX = "/v1.41"
DEFAULT_HOST = "unix:///var/run/docker.sock"
TIMEOUT = httpx.Timeout(30.0)
STREAMING = httpx.Timeout(30.0, read=None)  # a pull, a build or a container may stay silent for as long as it likes

Output = Callable[[bytes], Awaitable[None]]
Progress = Callable[[str], Awaitable[None]]

_EMPTY: Mapping[str, str] = MappingProxyType({})
# Per-layer states each layer goes through, often with byte-progress ticks: noise in a build log.
_TRANSIENT = frozenset(
    {"Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum", "Download complete", "Extracting"}
    | {"Preparing", "Pushing"}
)
_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class DockerError(ExecutorError):
    """The Docker engine refused a request, failed while doing it, or could not be reached."""


class NotFound(DockerError):
    """The engine (or the registry behind it) has no such image, container or network."""


@dataclass
class ContainerSpec:
    """What to run. `entrypoint=None` keeps the image's; `entrypoint=[]` clears it, so `cmd` runs as it is
    (the engine then still falls back to the image's CMD when `cmd` is None too)."""

    image: str
    name: str | None = None
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # values may hold any character, newlines too
    workdir: str | None = None
    binds: list[str] = field(default_factory=list)  # "host:container[:ro]"
    network: str | None = None  # a network's name, "host", or None for the engine's default
    aliases: list[str] = field(default_factory=list)  # DNS names on `network` (user-defined networks only)
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    extra_hosts: list[str] = field(default_factory=list)  # "name:ip"


class Docker:
    """One engine. Use as `async with Docker(host) as docker:`; `host` is a DOCKER_HOST value (unix:// only)."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or DEFAULT_HOST
        # verify=False: no TLS on a unix socket, and building the default TLS context costs ~55 ms per client.
        transport = httpx.AsyncHTTPTransport(uds=_socket_path(self.host), verify=False)
        # Followed logs and waits hold a connection each for a step's whole life; a pool limit would queue the
        # short calls behind them.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=8)
        self._client = httpx.AsyncClient(
            transport=transport, base_url=f"http://docker{API_PREFIX}", timeout=TIMEOUT, limits=limits
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- plumbing -----------------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str, request: httpx.Request | None = None) -> Iterator[None]:
        """Turns httpx's transport errors into DockerError. Given the request, only that request's: while a stream
        is read, an httpx error from a callback's own call is the callback's business and passes unchanged."""
        try:
            yield
        except httpx.TransportError as exc:
            if request is not None and not _raised_by(exc, request):
                raise
            if isinstance(exc, httpx.ConnectError):
                message = f"cannot reach the Docker engine at {self.host}: {exc} (is dockerd running?)"
            elif isinstance(exc, httpx.TimeoutException):
                message = f"{what}: the Docker engine did not answer in time"
            else:
                message = f"{what}: lost the connection to the Docker engine: {exc!r}"
            raise DockerError(message) from exc

    async def _request(
        self, method: str, path: str, what: str, *, ok: Sequence[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """One call; an error status not in `ok` raises, its message prefixed with `what`."""
        with self._errors(what):
            response = await self._client.request(method, path, **kwargs)
        if response.status_code >= 400 and response.status_code not in ok:
            raise _engine_error(what, response.status_code, response.content)
        return response

    @asynccontextmanager
    async def _stream(self, method: str, path: str, what: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed call, closed however the caller leaves (cancellation included)."""
        request = self._client.build_request(method, path, timeout=STREAMING, **kwargs)
        with self._errors(what, request):
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise _engine_error(what, response.status_code, response.content)
                yield response
            finally:
                await response.aclose()

    # --- engine and images --------------------------------------------------------------------------------------

    async def version(self) -> str:
        """The engine's version, e.g. "20.10.24+dfsg1"."""
        answer = await self._request("GET", "/version", "version")
        return str(answer.json()["Version"])

    async def inspect_image(self, ref: str) -> dict[str, Any] | None:
        answer = await self._request("GET", f"/images/{_quote(ref)}/json", f"inspect image {ref}", ok=(404,))
        found: dict[str, Any] | None = None if answer.status_code == 404 else answer.json()
        return found

    async def pull(self, ref: str, auth: RegistryAuth | None = None, progress: Progress | None = None) -> None:
        """Pulls `ref`; `progress` gets short lines (no byte counts). NotFound when the registry has no such image."""
        repository, tag = _split_reference(ref)
        what = f"pull {ref}"
        headers = {"X-Registry-Auth": auth.docker_header()} if auth else {}
        params = {"fromImage": repository, "tag": tag}
        async with self._stream("POST", "/images/create", what, params=params, headers=headers) as response:
            await _follow(response, what, progress)

    async def ensure_image(self, ref: str, auth: RegistryAuth | None = None, progress: Progress | None = None) -> None:
        """Pulls `ref` unless the engine has it already."""
        if await self.inspect_image(ref) is None:
            await self.pull(ref, auth, progress)

    async def tag(self, image: str, repository: str, tag: str) -> None:
        params = {"repo": repository, "tag": tag}
        await self._request("POST", f"/images/{_quote(image)}/tag", f"tag {image} as {repository}:{tag}", params=params)

    async def push(
        self, repository: str, tag: str, auth: RegistryAuth | None = None, progress: Progress | None = None
    ) -> str:
        """Pushes repository:tag; returns the manifest digest the registry stored ("sha256:...")."""
        what = f"push {repository}:{tag}"
        # The engine wants this header even without credentials (else it reads credentials from the body).
        header = auth.docker_header() if auth else base64.urlsafe_b64encode(b"{}").decode()
        digests: list[str] = []

        async def note(line: str) -> None:
            digests.extend(_DIGEST.findall(line))
            if progress:
                await progress(line)

        path, params = f"/images/{_quote(repository)}/push", {"tag": tag}
        async with self._stream("POST", path, what, params=params, headers={"X-Registry-Auth": header}) as response:
            aux = await _follow(response, what, note)
        digest = aux.get("Digest") or (digests[-1] if digests else None)
        if not isinstance(digest, str):
            raise DockerError(f"{what}: the engine did not report the pushed digest")
        return digest

    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Removes (or untags) an image; an absent one is fine."""
        params = {"force": "1"} if force else {}
        await self._request("DELETE", f"/images/{_quote(ref)}", f"remove image {ref}", params=params, ok=(404,))

    async def load(self, archive: Path) -> None:
        """Loads a `docker save` tar archive (images made by another tool, e.g. buildah) into the engine."""
        what = f"load {archive.name}"
        with archive.open("rb") as file:
            headers = {"Content-Type": "application/x-tar"}
            async with self._stream("POST", "/images/load", what, content=_chunks(file), headers=headers) as response:
                await _follow(response, what)

    async def build(
        self,
        context: Path,
        *,
        dockerfile: str = "Dockerfile",
        dockerfile_content: str | None = None,
        tags: Sequence[str] = (),
        build_args: Mapping[str, str] = _EMPTY,
        target: str | None = None,
        no_cache: bool = False,
        labels: Mapping[str, str] = _EMPTY,
        network: str = "host",
        auths: Sequence[RegistryAuth] = (),
        output: Output | None = None,
    ) -> str:
        """Builds with the engine's classic builder; returns the image id ("sha256:..."). `output` gets the build
        log as it comes. `dockerfile` is a path inside `context`; `dockerfile_content` is an inline Dockerfile
        instead. `network` is the RUN steps' network ("host": the engine may have no default bridge)."""
        what = f"build {tags[0] if tags else context}"
        try:
            archive, name = await asyncio.to_thread(context_tar, Path(context), dockerfile, dockerfile_content)
        except ContextError as exc:
            raise DockerError(f"{what}: {exc}") from None
        params = [("dockerfile", name), ("networkmode", network), ("rm", "1"), ("forcerm", "1")]
        params += [("t", t) for t in tags]
        if build_args:
            params.append(("buildargs", json.dumps(dict(build_args))))
        if labels:
            params.append(("labels", json.dumps(dict(labels))))
        if target:
            params.append(("target", target))
        if no_cache:
            params.append(("nocache", "1"))
        headers = {"Content-Type": "application/x-tar"}
        if auths:
            headers["X-Registry-Config"] = _registry_config(auths)

        async def status(line: str) -> None:  # pulls of FROM images
            if output:
                await output(f"{line}\n".encode())

        try:
            body = _chunks(archive)
            async with self._stream("POST", "/build", what, params=params, headers=headers, content=body) as response:
                aux = await _follow(response, what, status, output)
        finally:
            archive.close()
        image = aux.get("ID")
        if not isinstance(image, str) and tags:
            image = ((await self.inspect_image(tags[0])) or {}).get("Id")
        if not isinstance(image, str):
            raise DockerError(f"{what}: the engine did not say which image it built")
        return image

    # --- containers ---------------------------------------------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> str:
        """Creates (does not start) a container; returns its id. NotFound when the image is absent."""
        params = {"name": spec.name} if spec.name else {}
        what = f"create container from {spec.image}"
        answer = await self._request("POST", "/containers/create", what, params=params, json=_container_body(spec))
        return str(answer.json()["Id"])

    async def start(self, container_id: str) -> None:
        await self._request("POST", f"/containers/{_quote(container_id)}/start", f"start {container_id}", ok=(304,))

    async def output(self, container_id: str) -> AsyncGenerator[bytes, None]:
        """A started container's stdout and stderr, merged in the order the engine read them, from its first byte
        until its streams close. Call it after `start` (before, it ends at once). Breaking out of the loop early:
        wrap it in `contextlib.aclosing` so the stream closes right away."""
        # /logs replays from the first line and then follows, so nothing printed before this call is lost.
        cursor = _Cursor()
        async with aclosing(self._log_frames(container_id, follow=True)) as frames:
            async for second, payload in frames:
                cursor.add(second)
                yield payload
        # The engine (20.10) may end a followed log without its last lines when the container exits right after
        # writing them. Its log is complete by then: read the last seconds again and send what was missed.
        since, skip = cursor.resume()
        async with aclosing(self._log_frames(container_id, follow=False, since=since)) as frames:
            async for _, payload in frames:
                if skip:
                    skip -= 1
                else:
                    yield payload

    async def _log_frames(
        self, container_id: str, *, follow: bool, since: int | None = None
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """(second written, payload) of each log entry. Containers made here have no TTY, so the engine frames
        its answer (8-byte headers) and we take the frames apart."""
        params = {"stdout": "1", "stderr": "1", "timestamps": "1", "follow": "1" if follow else "0"}
        if since is not None:
            params["since"] = str(since)
        path, what = f"/containers/{_quote(container_id)}/logs", f"output of {container_id}"
        async with self._stream("GET", path, what, params=params) as response:
            buffer = bytearray()
            async for chunk in response.aiter_bytes():
                buffer += chunk
                for frame in _frames(buffer):
                    stamp, _, payload = frame.partition(b" ")
                    yield _epoch_second(stamp.decode(errors="replace"), what), payload

    async def wait(self, container_id: str) -> int:
        """Waits until a started container has stopped; returns its exit code."""
        what = f"wait for {container_id}"
        answer = await self._request("POST", f"/containers/{_quote(container_id)}/wait", what, timeout=STREAMING)
        result = answer.json()
        error = (result.get("Error") or {}).get("Message")
        if error:
            raise DockerError(f"{what}: {error}")
        return int(result["StatusCode"])

    async def stop(self, container_id: str, grace: float = 3) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after `grace` seconds; an absent container is fine."""
        seconds = max(0, math.ceil(grace))  # the engine counts whole seconds
        path = f"/containers/{_quote(container_id)}/stop"
        timeout = httpx.Timeout(30.0 + seconds)
        await self._request("POST", path, f"stop {container_id}", params={"t": seconds}, ok=(304, 404), timeout=timeout)

    async def pause(self, container_id: str) -> None:
        """Freezes every process of a running container (the cgroup freezer); one not running (not yet started,
        exited, gone) or already paused is fine: there is nothing of it to freeze."""
        path = f"/containers/{_quote(container_id)}/pause"
        await self._request("POST", path, f"pause {container_id}", ok=(404, 409))

    async def unpause(self, container_id: str) -> None:
        """Lets a paused container's processes go on; one not paused or gone is fine."""
        path = f"/containers/{_quote(container_id)}/unpause"
        await self._request("POST", path, f"unpause {container_id}", ok=(404, 409))

    async def remove(self, container_id: str) -> None:
        """Removes a container, running or not, with its anonymous volumes; an absent one is fine."""
        what = f"remove {container_id}"
        path, params = f"/containers/{_quote(container_id)}", {"force": "1", "v": "1"}
        answer = await self._request("DELETE", path, what, params=params, ok=(404, 409))
        # 409 "removal ... is already in progress": someone else is removing it, which is what we want.
        if answer.status_code == 409 and b"already in progress" not in answer.content:
            raise _engine_error(what, answer.status_code, answer.content)

    async def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container, stopped ones too, with label `key` or `key=value`."""
        params = {"all": "1", "filters": json.dumps({"label": [label]})}
        found: list[dict[str, Any]] = (
            await self._request("GET", "/containers/json", "list containers", params=params)
        ).json()
        return found

    # --- networks -----------------------------------------------------------------------------------------------

    async def create_network(self, name: str, labels: Mapping[str, str] = _EMPTY) -> str:
        """A user-defined bridge network (with the engine's DNS for container names and aliases); returns its id."""
        body = {"Name": name, "Driver": "bridge", "Attachable": True, "CheckDuplicate": True, "Labels": dict(labels)}
        answer = await self._request("POST", "/networks/create", f"create network {name}", json=body)
        return str(answer.json()["Id"])

    async def remove_network(self, network: str) -> None:
        await self._request("DELETE", f"/networks/{_quote(network)}", f"remove network {network}", ok=(404,))

    async def networks(self, label: str) -> list[dict[str, Any]]:
        params = {"filters": json.dumps({"label": [label]})}
        found: list[dict[str, Any]] = (await self._request("GET", "/networks", "list networks", params=params)).json()
        return found


# --- wire formats -----------------------------------------------------------------------------------------------


def _socket_path(host: str) -> str:
    path = host.removeprefix("unix://")
    if host.startswith("unix://") and path.startswith("/"):
        return path
    raise DockerError(f"unsupported DOCKER_HOST {host!r}: only unix:///path/to/docker.sock is supported")


def _raised_by(exc: httpx.RequestError, request: httpx.Request) -> bool:
    try:
        return exc.request is request
    except RuntimeError:  # httpx attached no request
        return False


def _quote(name: str) -> str:
    """An image, container or network name as a path segment (image names keep their slashes)."""
    return quote(name, safe="/:@")


def _engine_error(what: str, status: int, body: bytes) -> DockerError:
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    return (NotFound if status == 404 else DockerError)(f"{what}: {message}")


def _split_reference(ref: str) -> tuple[str, str]:
    """Repository and tag (or digest) of an image reference, for a pull; no tag means latest.
    A colon before the last slash belongs to a registry's port, not to a tag."""
    name, at, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = name[colon + 1 :] if colon > slash else "latest"
    repository = name[:colon] if colon > slash else name
    return repository, (digest if at else tag)


def _registry_config(auths: Sequence[RegistryAuth]) -> str:
    """The X-Registry-Config header: credentials for each registry a build may pull FROM."""
    config = {a.domain: {"username": a.username or "", "password": a.password or ""} for a in auths}
    return base64.urlsafe_b64encode(json.dumps(config).encode()).decode()


def _container_body(spec: ContainerSpec) -> dict[str, Any]:
    host_config: dict[str, Any] = {"Binds": list(spec.binds), "ExtraHosts": list(spec.extra_hosts) or None}
    body: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": dict(spec.labels),
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,  # output() relies on the engine framing stdout and stderr
        "OpenStdin": False,
        "HostConfig": host_config,
    }
    optional = {"Cmd": spec.cmd, "Entrypoint": spec.entrypoint, "WorkingDir": spec.workdir, "User": spec.user}
    body.update({key: value for key, value in optional.items() if value is not None})
    if spec.network:
        host_config["NetworkMode"] = spec.network
        if spec.aliases:
            body["NetworkingConfig"] = {"EndpointsConfig": {spec.network: {"Aliases": list(spec.aliases)}}}
    return body


def _frames(buffer: bytearray) -> Iterator[bytes]:
    """Takes the complete frames off the front of `buffer`: each is an 8-byte header (stream, 0, 0, 0, big-endian
    size) and its payload. A frame split across chunks stays in the buffer until the rest arrives."""
    while len(buffer) >= 8:
        end = 8 + int.from_bytes(buffer[4:8], "big")
        if len(buffer) < end:
            return
        payload = bytes(buffer[8:end])
        del buffer[:end]
        yield payload


class _Cursor:
    """How far a followed log got: its newest second, and the seconds of the entries it saw in the window before.
    Reading again from a second before the newest finds what the follower missed, after the `resume()[1]` entries
    it did see (the stdout and stderr copiers may stamp entries out of order, but not by a whole second)."""

    WINDOW = 1

    def __init__(self) -> None:
        self.newest: int | None = None
        self.recent: deque[int] = deque()

    def add(self, second: int) -> None:
        self.newest = second if self.newest is None else max(self.newest, second)
        self.recent.append(second)
        while self.recent[0] < self.newest - self.WINDOW:
            self.recent.popleft()

    def resume(self) -> tuple[int | None, int]:
        """(since, entries to skip) for reading again; (None, 0): from the start."""
        if self.newest is None:
            return None, 0
        since = self.newest - self.WINDOW
        return since, sum(1 for second in self.recent if second >= since)


@functools.lru_cache(maxsize=16)
def _epoch_second(stamp: str, what: str) -> int:
    """The whole second of a log timestamp ("2024-05-01T12:00:00.123456789Z")."""
    try:
        zone = stamp[19:].lstrip(".0123456789")
        return int(datetime.fromisoformat(stamp[:19] + ("+00:00" if zone in ("Z", "") else zone)).timestamp())
    except ValueError:
        raise DockerError(f"{what}: the engine sent a log entry without a timestamp: {stamp[:40]!r}") from None


async def _follow(
    response: httpx.Response, what: str, progress: Progress | None = None, output: Output | None = None
) -> dict[str, Any]:
    """Reads one of the engine's JSON-lines progress streams to its end: "stream" text to `output`, status lines
    (without byte progress, without repeats) to `progress`; returns the "aux" objects merged. An error line raises
    DockerError, even though the HTTP status said 200."""
    aux: dict[str, Any] = {}
    last = ""
    async for text in response.aiter_lines():
        for message in _messages(text, what):
            error = message.get("error") or (message.get("errorDetail") or {}).get("message")
            if error:
                raise DockerError(f"{what}: {error}")
            if isinstance(message.get("aux"), dict):
                aux.update(message["aux"])
            if output and isinstance(message.get("stream"), str):
                await output(message["stream"].encode())
            line = _status_line(message)
            if progress and line and line != last:
                last = line
                await progress(line)
    return aux


def _messages(line: str, what: str) -> Iterator[dict[str, Any]]:
    """The JSON objects on one line (the engine writes one per line, but a line with several would still parse)."""
    decoder, line = json.JSONDecoder(), line.strip()
    while line:
        try:
            message, end = decoder.raw_decode(line)
        except ValueError:
            raise DockerError(f"{what}: the engine sent something unexpected: {line[:200]!r}") from None
        if isinstance(message, dict):
            yield message
        line = line[end:].lstrip()


def _status_line(message: dict[str, Any]) -> str | None:
    status = message.get("status")
    if not isinstance(status, str) or status in _TRANSIENT or (message.get("progressDetail") or {}).get("current"):
        return None
    ident = message.get("id")
    return f"{ident}: {status}" if ident else status


async def _chunks(archive: IO[bytes], size: int = 1 << 16) -> AsyncIterator[bytes]:
    """A file (a build context, an image archive) as a streamed request body, read in a worker thread."""
    archive.seek(0)
    while chunk := await asyncio.to_thread(archive.read, size):
        yield chunk
