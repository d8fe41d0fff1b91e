"""The executor contract: run one step's commands somewhere and stream their output; executors that run
containers also build, push and compose images."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from outpost.containers.auth import RegistryAuth
from outpost.errors import ExecutorError

Output = Callable[[bytes], Awaitable[None]]
VOLUME_IN_STEP = "/codefresh/volume"  # where a container sees the build volume


@dataclass
class Mount:
    """A folder of the build volume (on the runner's host) seen by a container at `target`."""

    source: Path
    target: str
    read_only: bool = False


@dataclass
class Readiness:
    """A freestyle step's `services.readiness`: commands retried in `image` until they pass."""

    image: str
    script: str
    timeout: float = 10.0  # seconds one attempt may take
    period: float = 10.0  # seconds between attempts
    success_threshold: int = 1
    failure_threshold: int = 3
    initial_delay: float = 0.0

    async def wait(self, attempt: Callable[[], Awaitable[tuple[int, str]]], output: Output) -> None:
        """Runs `attempt` (the executor's: the commands once, as (exit code or -1 for "timed out or could not
        run", the last words to show)) until it passes `success_threshold` times in a row; ExecutorError once
        it fails `failure_threshold` times in a row."""
        if self.initial_delay:
            await asyncio.sleep(self.initial_delay)
        passes = fails = tries = 0
        while True:
            tries += 1
            code, last_words = await attempt()
            if code == 0:
                passes, fails = passes + 1, 0
                if passes >= self.success_threshold:
                    await output(f"[outpost] services ready (readiness check passed, attempt {tries})\n".encode())
                    return
            else:
                passes, fails = 0, fails + 1
                why = "timed out or could not run" if code == -1 else f"exited with {code}"
                await output(f"[outpost] readiness check {why} (attempt {tries}){last_words}\n".encode())
                if fails >= self.failure_threshold:
                    raise ExecutorError(f"the services did not become ready: readiness failed {fails} times")
            await asyncio.sleep(self.period)


@dataclass
class ServiceSpec:
    """A container that runs beside steps (a composition's service, a candidate, a step's service), reachable
    by `name` from the build's containers."""

    name: str
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    mounts: list[Mount] = field(default_factory=list)


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
    # What only container executors use:
    workdir_in_step: str | None = None  # the working directory as the container sees it; None = the image's
    host_env: frozenset[str] = frozenset()  # names in `env` that come from the runner's own environment
    cmd: list[str] | None = None  # `cmd` instead of `commands`: the image's entrypoint runs these arguments
    entrypoint: list[str] | None = None
    mounts: list[Mount] = field(default_factory=list)  # `volumes:` besides the build volume
    auths: list[RegistryAuth] = field(default_factory=list)  # for pulling `image`
    services: list[ServiceSpec] = field(default_factory=list)  # started before the step, removed after it
    readiness: Readiness | None = None
    # A kubeconfig file on the runner's host (outside the build volume) with the build's clusters: the executor
    # makes it readable by the step and points KUBECONFIG to it (executors with `takes_kubeconfig`).
    kubeconfig: Path | None = None


@dataclass
class ImageBuildJob:
    """A `build` step: build `dockerfile` (or inline `dockerfile_content`) in `context`, tagged with every `tags`."""

    step: str
    context: Path
    tags: list[str]  # local references, e.g. `my-app:main`
    dockerfile: str = "Dockerfile"  # relative to `context`
    dockerfile_content: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    auths: list[RegistryAuth] = field(default_factory=list)  # for FROM images in private registries


@dataclass
class BuiltImage:
    image_id: str  # sha256:...
    reference: str  # the first tag
    builder: str  # docker | buildah


@dataclass
class PushJob:
    step: str
    image: str  # a local reference or image id (a build step's result)
    targets: list[str]  # full references: registry domain / name : tag
    auth: RegistryAuth | None = None


@dataclass
class CompositionJob:
    """A `composition` step: `services` start first (in order), then `candidates` run; the step passes when every
    candidate exits 0."""

    step: str
    services: list[ServiceSpec]
    candidates: list[ServiceSpec]
    auths: list[RegistryAuth] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the composition had that is ignored


class PauseClock:
    """How long an executor's steps have been paused in all, the current pause included: a step's timeout does not
    count that time (a freeze is the control plane's stall, not the step's slowness)."""

    def __init__(self) -> None:
        self._total = 0.0
        self._since: float | None = None

    def pause(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def resume(self) -> None:
        if self._since is not None:
            self._total += time.monotonic() - self._since
            self._since = None

    def __call__(self) -> float:
        return self._total + (time.monotonic() - self._since if self._since is not None else 0.0)


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
    - Optionally, `await pause()` freezes everything the executor runs for this build (the processes stop where
      they are and run nothing, their output stays where it is) and holds back any step started meanwhile until
      `await resume()`, which lets it all go on as if nothing had happened. `pause` returns False when the
      executor cannot do that (the default): the runner then cancels the build instead. A cancel of a paused
      step must still end it (and, as always, only return once nothing of it runs), without resuming it first.
      The runner pauses a build whose lease deadline passed without a renewal, and resumes it if the control
      plane renews the lease after all. An executor that pauses keeps `paused` (a PauseClock) going meanwhile:
      the engine does not count that time against a step's timeout.
    """

    name: ClassVar[str] = "base"
    # Step types this executor runs besides freestyle (git-clone and approvals run in the engine itself).
    step_types: ClassVar[frozenset[str]] = frozenset()
    # Whether `run` gives a step its job's `kubeconfig` (else the engine says the step has none).
    takes_kubeconfig: ClassVar[bool] = False

    def __init__(
        self, volume: Path, scratch: Path, *, build_id: str = "", options: Mapping[str, str] | None = None
    ) -> None:
        self.volume = volume  # the build volume, shared by every step
        self.scratch = scratch  # the runner's private folder for this build
        self.build_id = build_id
        self.options = dict(options or {})  # the runner's settings for this executor (e.g. docker_host)
        self.paused = PauseClock()

    @classmethod
    async def preflight(cls, options: Mapping[str, str]) -> str | None:
        """Checked once when a runner starts: a line for its log, or an ExecutorError saying what is missing."""
        return None

    def volume_in_step(self) -> str:
        """The path at which steps see the build volume (CF_VOLUME_PATH)."""
        return str(self.volume)

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
    def after_crash(cls, volume: Path, scratch: Path, build_id: str, options: Mapping[str, str] | None = None) -> None:
        """Called by a restarted runner for each build a crashed runner process left behind:
        remove whatever of it may still run (processes, containers)."""
        return None

    async def pause(self) -> bool:
        """Freezes the build's steps (see the contract above); False: this executor cannot."""
        return False

    async def resume(self) -> None:
        """Lets what `pause` froze go on; a no-op when nothing is paused."""
        return None

    def notice(self, job: StepJob) -> str | None:
        """A one-line remark for the step's log before it runs (e.g. what the executor ignores)."""
        return None

    async def run(self, job: StepJob, output: Output) -> int:
        raise NotImplementedError

    async def build_image(self, job: ImageBuildJob, output: Output) -> BuiltImage:
        raise ExecutorError(f"build steps are not supported by this runner's executor ({self.name})")

    async def push_image(self, job: PushJob, output: Output) -> str:
        """Pushes to every target; returns the repository digest (sha256:...)."""
        raise ExecutorError(f"push steps are not supported by this runner's executor ({self.name})")

    async def compose(self, job: CompositionJob, output: Output) -> int:
        """Runs a composition; returns 0 when every candidate exited 0, else the first failing exit code."""
        raise ExecutorError(f"composition steps are not supported by this runner's executor ({self.name})")
