"""Build volumes kept between builds of a pipeline on a runner, as the original caches /codefresh/volume: a
cached checkout is then refreshed instead of cloned again, and files the steps leave are there next time.

One build holds a pipeline's volume at a time (an exclusive, non-blocking lock on a file beside it); a build
that finds it taken gets a fresh volume of its own, removed with the build, as with `--volume-reuse none`. With
`--volume-reuse branch` the volume is kept per pipeline and branch. (With Kubernetes engine pods the kept volume is
a PersistentVolumeClaim of its own instead, `executors/kubernetes/claims.py`, keyed the same way.)
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

POLICIES = ("pipeline", "branch", "none")
MAX_MARK = 64 * 1024  # bytes of a volume's last-build mark worth reading


@dataclass
class Volume:
    path: Path
    kept: bool  # a pipeline's cached volume (left in place afterwards), or the build's own
    _lock: int | None = None
    # Where its last-build mark is: beside the folder by default; inside it for a volume that is a claim of its
    # own (nothing beside it outlives the build).
    marker: Path | None = None
    mounted: bool = False  # a claim mounted at `path`: what removes the build folder must leave it alone

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


MARK_IN_CLAIM = ".outpost-last-build.json"  # a claim's mark, in the claim itself


def _mark_of(volume: Volume) -> Path:
    return volume.marker or volume.path.with_name(volume.path.name + ".last.json")


def of_claim(path: Path, *, kept: bool) -> Volume:
    """A build volume that is a claim mounted at `path` (engine pods): held through the API, not a file lock."""
    return Volume(path, kept, marker=path / MARK_IN_CLAIM, mounted=True)


def key(account: str, pipeline: str, branch: str | None = None) -> tuple[str, str]:
    """(a readable name, a stable digest) of a kept volume: the pipeline's, or with `branch` the pipeline and
    branch's. The digest tells apart names that read alike once cut short."""
    parts = [account, pipeline] + ([branch] if branch is not None else [])
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-.")[:60] or "pipeline"
    return readable, hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


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
    # Written into the file that is there (`forget_last_build` empties it), not written aside and renamed: a new
    # file a build costs the kernel a search for a free inode (runner/outbox.py says why that is dear). A crash in
    # the middle leaves JSON cut short, which reads as no mark: the volume is then not resumed, as if unmarked.
    with contextlib.suppress(OSError):
        _mark_of(volume).write_text(json.dumps(last.__dict__))


def forget_last_build(volume: Volume) -> None:
    """Called when a build takes the volume: until it has finished, no build may resume on it. The mark is emptied,
    which reads as no mark, and is left in place for `mark_last_build` to write into."""
    if volume.kept:
        with contextlib.suppress(OSError):
            os.truncate(_mark_of(volume), 0)


def claim(root: Path, account: str, pipeline: str, fallback: Path, branch: str | None = None) -> Volume:
    """The pipeline's (or with `branch`, the pipeline and branch's) cached volume under `root` if no other build
    holds it, else `fallback` (the build's own)."""
    readable, digest = key(account, pipeline, branch)
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
