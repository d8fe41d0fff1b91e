"""Build volumes kept between builds of a pipeline on a runner, as the original caches /codefresh/volume: a
cached checkout is then refreshed instead of cloned again, and files the steps leave are there next time.

One build holds a pipeline's volume at a time (an exclusive, non-blocking lock on a file beside it); a build
that finds it taken gets a fresh volume of its own, removed with the build, as with `--volume-reuse none`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

POLICIES = ("pipeline", "none")


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
