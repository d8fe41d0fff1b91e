"""What one pod of a step runs (`PodRun`), and its output: read by byte offset from its file on the build volume, and
for a composition's members prefixed with their names. No API calls here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outpost.containers import images
from outpost.containers.auth import RegistryAuth
from outpost.executors.base import Output

POLL = 0.2  # seconds between reads of a growing output file
# In a step pod's folder: the log stream its output goes to, and how many bytes of its output file the log has.
COPIED_FILE = "copied"
# Beside it, sealed under the build's job token: the values that stream masks, for the runner to mask the same.
MASKED_FILE = "masked.sealed"


@dataclass
class PodRun:
    """One pod a step runs: `script` is run by `shell` with its output going to a file on the build volume."""

    step: str
    image: str
    script: str
    env: Mapping[str, str] = field(default_factory=dict)
    logins: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    shell: str = "/bin/sh"
    workdir: str | None = None
    builder: bool = False  # a builder pod: buildah's security settings (objects.builder_security)
    privileged: bool = False  # the Docker-in-Docker pod (objects.dind_security)
    keep: dict[str, str] | None = None  # files of the pod's folder (iid, digest) read into this before it goes
    aliases: Mapping[str, str] = field(default_factory=dict)  # host name -> IP (a composition's services)
    stream: str | None = None  # the build log's stream its output goes to, when it is a step's (COPIED_FILE)
    masked: frozenset[str] = frozenset()  # the values that stream masks (MASKED_FILE)


def note_copied(folder: Path, stream: str, offset: int) -> None:
    """Records that the build's log has the first `offset` bytes of the output file in `folder`. An engine pod that
    dies (a kill, OOM) leaves it for its runner, which copies the rest of the file into the log (supervisor): the
    step's last words, printed after the engine's last read, are not lost. Replaced whole, by a rename."""
    partial = folder / (COPIED_FILE + ".part")
    partial.write_text(json.dumps({"stream": stream, "offset": offset}))
    partial.replace(folder / COPIED_FILE)


def shown_of(output: Output, offset: int) -> int:
    """Of the first `offset` bytes fed to `output`, how many it has shown (a masking output keeps back a possible
    beginning of a secret)."""
    return offset - int(getattr(output, "held", 0))


async def copy_output(path: Path, offset: int, output: Output, noted: Callable[[int], None] | None = None) -> int:
    """Sends what `path` holds from `offset` on; returns the new offset. The file only grows. `noted` is told each
    new offset as soon as `output` has taken the chunk before it."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 16):
                await output(chunk)
                offset += len(chunk)
                if noted is not None:
                    noted(offset)
    except FileNotFoundError:
        pass
    return offset


async def keep_copying(path: Path, output: Prefixed) -> None:
    """Copies a service's output file into `output` as it grows, until cancelled (then once more)."""
    offset = 0
    try:
        while True:
            offset = await copy_output(path, offset, output)
            await asyncio.sleep(POLL)
    finally:
        await asyncio.shield(copy_output(path, offset, output))
        await asyncio.shield(output.flush())


class Prefixed:
    """Each line of a composition member's output, prefixed with its name (as the Docker executor does); `flush`
    sends a last line that has no newline."""

    def __init__(self, name: str, output: Output) -> None:
        self.prefix, self.output, self.pending = f"[{name}] ".encode(), output, b""

    async def __call__(self, chunk: bytes) -> None:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        if lines:
            await self.output(b"".join(self.prefix + line + b"\n" for line in lines))

    async def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, b""
            await self.output(self.prefix + pending + b"\n")


async def quiet(chunk: bytes) -> None:
    return None


def logins(image: str, auths: Sequence[RegistryAuth]) -> dict[str, tuple[str, str]]:
    """The credentials of the registry integration for an image, keyed as the kubelet looks them up (the image's
    registry as written in the reference)."""
    wanted = images.domain_of(image)
    for auth in auths:
        if images.canonical_host(auth.domain) == wanted and auth.username:
            domain = image.split("/", 1)[0] if "/" in image else "https://index.docker.io/v1/"
            return {domain: (auth.username, auth.password or "")}
    return {}
