"""Build contexts as the Docker engine takes them: the context folder as a tar, filtered by its `.dockerignore`,
with the Dockerfile checked to lie inside it or an inline Dockerfile added under a name of its own."""

from __future__ import annotations

import io
import os
import re
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from outpost.errors import ExecutorError

INLINE_DOCKERFILE = ".outpost.Dockerfile"

_GLOB = re.compile(r"(\*\*/?|\*|\?)")
_GLOB_REGEX = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


class ContextError(ExecutorError):
    """The build context cannot be sent: not a folder, or no Dockerfile inside it. The engine client turns it
    into its own error, naming the build."""


def context_tar(context: Path, dockerfile: str, content: str | None) -> tuple[IO[bytes], str]:
    """The build context as a tar in a temporary file, and the Dockerfile's name in it. `dockerfile` is a path
    inside `context`; `content`, when given, is an inline Dockerfile instead. Blocks: run it in a worker thread."""
    if not context.is_dir():
        raise ContextError(f"the context {context} is not a folder")
    ignore_file = context / ".dockerignore"
    ignore_text = ignore_file.read_text(errors="replace") if ignore_file.is_file() else None
    patterns = _ignore_patterns(ignore_text or "")
    if content is None:
        name = _dockerfile_inside(context, dockerfile)
        keep = {name, ".dockerignore"}  # the engine needs both even when .dockerignore lists them (it drops them)
    else:
        name = INLINE_DOCKERFILE
        while (context / name).exists() or (context / name).is_symlink():
            name = f".outpost-{uuid.uuid4().hex[:8]}.Dockerfile"
        keep = set()
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - the caller streams it, then closes it
    try:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            sent = [p for p in _context_files(context, patterns) if not (content is not None and p == ".dockerignore")]
            sent += sorted(p for p in keep - set(sent) if (context / p).is_file())
            for path in sent:
                tar.add(context / path, arcname=path, recursive=False, filter=_as_root)
            if content is not None:
                # As `docker build -f -` does: list the inline Dockerfile in .dockerignore, so the engine leaves it
                # (and, when we wrote .dockerignore, that too) out of what COPY . sees.
                ignore_text = ".dockerignore\n" if ignore_text is None else ignore_text
                _add_bytes(tar, name, content.encode())
                _add_bytes(tar, ".dockerignore", f"{ignore_text}\n{name}\n".encode())
    except BaseException:
        archive.close()
        raise
    return archive, name


def _dockerfile_inside(context: Path, dockerfile: str) -> str:
    root = context.resolve()
    path = (root / dockerfile).resolve()
    if not path.is_relative_to(root):
        raise ContextError(f"the Dockerfile {dockerfile!r} is outside the build context {context}")
    if not path.is_file():
        raise ContextError(f"there is no Dockerfile {dockerfile!r} in the build context {context}")
    return path.relative_to(root).as_posix()


def _context_files(context: Path, patterns: list[tuple[bool, re.Pattern[str]]]) -> Iterator[str]:
    """Relative paths of what to send, parents first; symbolic links are sent as links, never followed."""
    exceptions = any(negated for negated, _ in patterns)
    for folder, dirs, files in os.walk(context):
        here = Path(folder).relative_to(context)
        descend = []
        for name in sorted(dirs):
            path = (here / name).as_posix()
            if not _ignored(path, patterns):
                yield path
                descend.append(name)
            elif exceptions:  # a "!" pattern may bring back something inside
                descend.append(name)
        dirs[:] = descend
        for name in sorted(files):
            path = (here / name).as_posix()
            if not _ignored(path, patterns):
                yield path


def _ignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore's simple patterns: *, ?, ** and ! exceptions (no [classes]); comments and blanks skipped."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        if pattern not in ("", "."):
            regex = "".join(_GLOB_REGEX.get(part) or re.escape(part) for part in _GLOB.split(pattern))
            patterns.append((negated, re.compile(regex)))
    return patterns


def _ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """The last pattern that matches the path, or one of its parent folders, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negated, pattern in patterns:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # As the docker CLI sends contexts: owned by root, whoever runs us.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))
