"""Build folders made ahead: a claimed build takes one with a rename instead of making its own on its way to its
first step.

A build's folder is a dozen files and folders (the outbox, the volume, the scratch folder with `cf_export`); on
the runner's disk making them took 1.5-2.5 ms of the hand-over (docs/benchmarks.md), as much as everything else
the runner does between the poll's answer and the first step. A spare holds nothing of any build: no lease, no
secret, no log. Spares are made in a thread, when the runner starts and after each build, and a new runner process
throws away what an earlier one left.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

from outpost.engine import cfexport
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


def clear(spares: Path) -> None:
    """Throws away the spares an earlier runner process left (made by another version, maybe)."""
    shutil.rmtree(spares, ignore_errors=True)
