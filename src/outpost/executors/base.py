"""The executor contract: run one step's commands somewhere and stream their output."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

Output = Callable[[bytes], Awaitable[None]]


@dataclass
class StepJob:
    """What a step asks the executor to run.

    `script` is the shell script (already `set -e` prefixed by the engine), `env` the full environment
    the step sees (system, pipeline, run and exported variables plus the step's `environment`), and
    `workdir` a folder on the runner's host inside the build volume.
    """

    step: str
    script: str
    env: Mapping[str, str]
    workdir: Path
    shell: str = "sh"
    image: str | None = None
    extra_path: list[Path] = field(default_factory=list)


class Executor:
    """Runs step processes for one build.

    Contract:
    - `async with executor:` prepares whatever the build needs and, on exit, removes everything it
      created (processes, containers, networks), whatever happened inside.
    - `await run(job, output)` runs the job, calls `output(chunk)` with the step's stdout and stderr
      merged, in order, as it arrives, and returns the exit code.
    - If the task awaiting `run` is cancelled, every process of the step is gone before the
      CancelledError propagates: cancellation is how the engine implements cancel and timeouts.
    - Problems of the executor itself (not the step's own failure) raise ExecutorError.
    """

    name: ClassVar[str] = "base"

    def __init__(self, volume: Path, scratch: Path) -> None:
        self.volume = volume  # the build volume, shared by every step
        self.scratch = scratch  # the runner's private folder for this build

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @classmethod
    def after_crash(cls, volume: Path, scratch: Path, build_id: str) -> None:
        """Called by a restarted runner for each build a crashed runner process left behind:
        remove whatever of it may still run (processes, containers)."""
        return None

    def notice(self, job: StepJob) -> str | None:
        """A one-line remark for the step's log before it runs (e.g. what the executor ignores)."""
        return None

    async def run(self, job: StepJob, output: Output) -> int:
        raise NotImplementedError
