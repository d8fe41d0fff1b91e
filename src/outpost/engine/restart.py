"""A restart from the failed step, as the engine runs it: which steps it skips because they succeeded in the build
it repeats, and when it stops skipping.

The runner decides whether skipping is safe at all (it still holds that build's volume as the build left it, and
the build exported no variables: runner/volumes.py); the engine then skips a step only if it succeeded there and is
not a git-clone step (a clone is re-run: its variables and `main_clone` are needed, and on a kept volume it is a
refresh). Should a re-run clone check out another revision than it did then, nothing more is skipped: the files
the skipped steps left were made from other sources. docs/artifacts.md says why this never gives a wrong result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from outpost.engine.state import BuildState
from outpost.pipelines.spec import Step

NEVER_SKIPPED = ("git-clone", "parallel")  # a parallel step's children are judged one by one


@dataclass
class Restart:
    original: str  # "#41"
    succeeded: frozenset[str] = frozenset()  # empty: every step runs (the note says why)
    clones: dict[str, str] = field(default_factory=dict)  # git-clone step -> the revision it checked out then
    note: str = ""  # said at the top of the build's log
    stopped: str = ""  # why skipping stopped mid-build

    def skip(self, step: Step) -> str | None:
        """Why `step` does not run (its message on the page), or None to run it."""
        if self.stopped or step.type in NEVER_SKIPPED or step.name not in self.succeeded:
            return None
        return f"succeeded in {self.original}: not run again (restarted from the failed step, on its volume)"

    def after_clone(self, step: Step, state: BuildState) -> str | None:
        """After a git-clone step ran again: a note if it checked out another revision than in the original (then
        every later step runs)."""
        then = self.clones.get(step.name)
        now = state.members.get(f"steps.{step.name}.revision", "")
        if self.stopped or not self.succeeded or then is None or then == now:
            return None
        self.stopped = f"{step.name} checked out {now[:12] or 'nothing'}, not {then[:12]} as in {self.original}"
        return f"{self.stopped}: every later step runs"
