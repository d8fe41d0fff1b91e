"""Build volumes kept between builds of a pipeline on a runner, as the original caches /codefresh/volume: a
cached checkout is then refreshed instead of cloned again, and files the steps leave are there next time.

One build holds a pipeline's volume at a time (an exclusive, non-blocking lock on a file beside it); a build
that finds it taken gets a fresh volume of its own, removed with the build, as with `--volume-reuse none`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

POLICIES = ("pipeline", "none")
MAX_MARK = 64 * 1024  # bytes of a volume's last-build mark worth reading


@dataclass
class Volume:
    path: Path
    kept: bool  # a pipeline's cached volume (left in place afterwards), or the build's own
    _lock: int | None = None

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)  # closing the descriptor drops the lock
            self._lock = None


@dataclass
class LastBuild:
    """What the last build that held a kept volume left said of it (a file beside the volume, the runner's own),
    for a restart from the failed step: whether the volume is still as that build left it. No secret is in it."""

    build_id: str
    complete: bool  # the build ran to its end here (not abandoned, lost or revoked midway)
    exported: bool  # cf_export values were in the volume: they are removed with the build, so cannot be reused
    clones: dict[str, str]  # git-clone step -> the revision it checked out


def _mark_of(volume: Volume) -> Path:
    return volume.path.with_name(volume.path.name + ".last.json")


def last_build(volume: Volume) -> LastBuild | None:
    """The last build that held this kept volume, if one said so (None for a build's own volume)."""
    if not volume.kept:
        return None
    try:
        with _mark_of(volume).open("rb") as f:
            raw = json.loads(f.read(MAX_MARK))
        return LastBuild(
            str(raw["build_id"]),
            raw["complete"] is True,
            raw["exported"] is not False,
            {str(k): str(v) for k, v in dict(raw["clones"]).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def mark_last_build(volume: Volume, last: LastBuild) -> None:
    """Written while the build still holds the volume's lock; a kept volume left unmarked is never resumed."""
    if not volume.kept:
        return
    mark = _mark_of(volume)
    temporary = mark.with_suffix(".tmp")
    with contextlib.suppress(OSError):
        temporary.write_text(json.dumps(last.__dict__))
        os.replace(temporary, mark)


def forget_last_build(volume: Volume) -> None:
    """Called when a build takes the volume: until it has finished, no build may resume on it."""
    if volume.kept:
        with contextlib.suppress(OSError):
            _mark_of(volume).unlink()


def claim(root: Path, account: str, pipeline: str, fallback: Path) -> Volume:
    """The pipeline's cached volume under `root` if no other build holds it, else `fallback` (the build's own)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{account}-{pipeline}").strip("-.")[:60] or "pipeline"
    digest = hashlib.sha256(f"{account}\0{pipeline}".encode()).hexdigest()[:12]  # names that slug alike differ
    path = root / f"{readable}-{digest}"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(root / f"{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return Volume(fallback, kept=False)
    return Volume(path, kept=True, _lock=descriptor)


def held(path: Path) -> bool:
    """Whether a build holds this pipeline volume now (in this process or another: an engine pod's)."""
    try:
        descriptor = os.open(path.with_name(f"{path.name}.lock"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False
