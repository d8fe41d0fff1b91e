"""Build folders made ahead: a claimed build takes one with a rename instead of making its own on its way to its
first step.

A build's folder is a dozen files and folders (the outbox, the volume, the scratch folder with `cf_export`); on
the runner's disk making them took 1.5-2.5 ms of the hand-over (docs/benchmarks.md), as much as everything else
the runner does between the poll's answer and the first step. A spare holds nothing of any build: no lease, no
secret, no log. Spares are made in a thread, when the runner starts and after each build, and a new runner process
throws away what an earlier one left.

A finished build's folder becomes a spare again (`recycle`): its files are emptied and what the build added is
removed, instead of removing it all and making the next folder anew. Each new file costs the kernel a search for a
free inode, and on a disk without a journal that search also steps over every inode freed in the last seconds:
at 50 trivial builds a second, the runner spent most of its CPU there (perf: `recently_deleted`, ext4).
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
from pathlib import Path

from outpost.engine import cfexport
from outpost.runner import outbox
from outpost.runner.outbox import Outbox

_names = itertools.count()


def take(spares: Path, folder: Path) -> bool:
    """Moves a spare to `folder` (which must not exist yet). False when there is none: the build makes its own."""
    try:
        names = os.listdir(spares)
    except OSError:
        return False
    for name in names:
        if name.endswith(".partial"):
            continue
        try:
            os.rename(spares / name, folder)
        except OSError:  # taken meanwhile, or `folder` is there: the next one, or none
            continue
        return True
    return False


def fill(spares: Path, count: int) -> None:
    """Makes spares until there are `count` (in a thread: nothing here is on a build's path)."""
    spares.mkdir(parents=True, exist_ok=True)
    ready = sum(1 for name in os.listdir(spares) if not name.endswith(".partial"))
    for _ in range(count - ready):
        name = f"{os.getpid()}-{next(_names)}"
        partial = spares / f"{name}.partial"
        make(partial)
        os.rename(partial, spares / name)  # whole, or not there at all


def make(folder: Path) -> None:
    """What every build's folder holds before its build starts (job.py: `outbox`, `volume`, `scratch`)."""
    Outbox.prepare(folder / "outbox")
    (folder / "volume").mkdir()
    cfexport.install(folder / "scratch" / "bin")


# What a recycled folder keeps, emptied: the files every build writes (`make`), and the local executor's record of
# its steps' process groups. Everything else a build left is removed.
_MADE = tuple(f"outbox/{name}" for name, _ in outbox.SKELETON)  # what a spare must hold (cf_export is written anew)
_KEPT_FILES = frozenset({*_MADE, "scratch/running/steps"})
_KEPT_FOLDERS = frozenset(
    {"outbox", "outbox/logs", f"outbox/{outbox.BLANK_DIR}", "volume", "scratch", "scratch/bin", "scratch/running"}
)
_LOGS = "outbox/logs/"
_BLANK = f"outbox/{outbox.BLANK_DIR}/"
_MOST_BLANKS = 64  # blank files a recycled outbox keeps at most (a build of many steps returns as many)
_CF_EXPORT = "scratch/bin/cf_export"


def recycle(folder: Path, spares: Path, count: int) -> bool:
    """Makes a finished build's folder a spare, unless `count` are ready; else (or if it cannot be emptied: a file
    the runner may not remove, a link where a folder was) removes it. True if it became a spare. In a thread."""
    try:
        ready = sum(1 for name in os.listdir(spares) if not name.endswith(".partial"))
        if ready < count:
            blanks = folder / "outbox" / outbox.BLANK_DIR
            blanks.mkdir(exist_ok=True)
            _empty(folder, "", _Blanks(blanks))
            missing = [name for name in (*_MADE, "volume") if not (folder / name).exists()]
            if missing:  # a step removed it, or put a link where it was: no spare
                raise FileNotFoundError(f"{folder}: {', '.join(missing)} missing")
            os.chmod(folder / "outbox" / outbox.LEASE_FILE, 0o600)  # as `make` made it, whatever a step did
            cfexport.install(folder / "scratch" / "bin", fresh=True)
            os.rename(folder, spares / f"{os.getpid()}-{next(_names)}")
            return True
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)
    return False


class _Blanks:
    """The blank files of an outbox being emptied: its streams' logs, emptied, are added to them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names = set(os.listdir(folder))

    def add(self, path: str) -> bool:
        """Empties the file and moves it in; False when there are enough (it is then removed)."""
        if len(self.names) >= _MOST_BLANKS:
            return False
        name = next(str(n) for n in itertools.count() if str(n) not in self.names)
        os.truncate(path, 0)
        os.rename(path, self.folder / name)
        self.names.add(name)
        return True


def _empty(folder: Path, relative: str, blanks: _Blanks) -> None:
    """Empties the files of the skeleton under `folder` (`relative` to the build folder) and removes the rest;
    the streams' logs become blank files. Nothing is followed: a link is removed, not what it points to. OSError
    if something cannot be."""
    with os.scandir(folder) as entries:
        for entry in list(entries):  # `blanks.add` renames into a folder that may be the one listed
            name = f"{relative}{entry.name}"
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode) and name in _KEPT_FOLDERS:
                _empty(Path(entry.path), name + "/", blanks)
            elif stat.S_ISREG(mode) and (name in _KEPT_FILES or name.startswith(_BLANK)):
                os.truncate(entry.path, 0)
            elif stat.S_ISREG(mode) and name.startswith(_LOGS) and name.endswith(".log"):
                if not blanks.add(entry.path):  # enough blanks already
                    os.unlink(entry.path)
            elif stat.S_ISREG(mode) and name == _CF_EXPORT:
                pass  # written anew by `recycle`
            elif stat.S_ISDIR(mode):
                shutil.rmtree(entry.path)  # raises if it cannot: the folder is then no spare
            else:
                os.unlink(entry.path)


def clear(spares: Path) -> None:
    """Throws away the spares an earlier runner process left (made by another version, maybe)."""
    shutil.rmtree(spares, ignore_errors=True)
