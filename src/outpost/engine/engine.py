"""The build engine: plans a pipeline and runs its steps through an executor.

The engine knows nothing of HTTP: it reports through a `Reporter` (the runner's outbox in production,
a list in tests) and runs processes through an `Executor`. One engine runs one build.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from outpost.engine import cfexport
from outpost.engine.masking import Masker
from outpost.errors import ExecutorError, PipelineError
from outpost.executors.base import Executor, Output, StepJob
from outpost.pipelines.parsing import load_pipeline
from outpost.pipelines.spec import Pipeline, Step
from outpost.pipelines.variables import (
    EXPORT_FILE,
    build_system_variables,
    parse_export_file,
    substitute,
)
from outpost.wire import SYSTEM_STREAM, BuildStarted, FinalBuildStatus, StepPlan, StepStatus, StepUpdate

VOLUME_ALIAS = "/codefresh/volume"
# Only these variables of the runner's own environment reach a step: never its tokens.
PASSED_THROUGH = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


class Reporter(Protocol):
    """Where the engine sends what happens. Calls return once the report is safely queued."""

    async def started(self, message: BuildStarted) -> None: ...

    async def step(self, name: str, update: StepUpdate) -> None: ...

    async def log(self, stream: str, data: bytes) -> None: ...


@dataclass
class BuildContext:
    build_id: str
    account: str
    pipeline: str
    yaml: str
    volume: Path  # stands in for /codefresh/volume
    scratch: Path  # the runner's private folder for this build (scripts, bin)
    yaml_file: str = "codefresh.yml"
    variables: dict[str, str] = field(default_factory=dict)  # pipeline and run variables, merged
    secrets: dict[str, str] = field(default_factory=dict)  # variables too, masked in every log
    build_url: str = ""
    created_at: float = 0.0
    trigger: str = "build"
    initiator: str = ""
    runner: str = ""  # who runs the build, said once at the top of the build's own log
    branch: str | None = None  # what the build was asked to build, when it knows (webhook, run --branch)
    revision: str | None = None
    event: dict[str, Any] | None = None  # a webhook build's payload, written to <volume>/event.json


@dataclass
class BuildOutcome:
    status: FinalBuildStatus
    message: str | None = None


@dataclass
class _StepResult:
    status: StepStatus
    exit_code: int | None = None
    message: str | None = None


class BuildEngine:
    def __init__(self, ctx: BuildContext, executor: Executor, reporter: Reporter) -> None:
        self.ctx = ctx
        self.executor = executor
        self.reporter = reporter
        self.variables: dict[str, str] = {}
        self._cancel = asyncio.Event()
        self._cancel_reason = ""
        self._noticed = False
        self._masked: set[str] = set(ctx.secrets.values())

    def cancel(self, reason: str = "cancel requested") -> None:
        self._cancel_reason = reason
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    async def run(self) -> BuildOutcome:
        if self.ctx.runner:
            await self._system(f"{self.ctx.runner}\n")
        try:
            pipeline = load_pipeline(self.ctx.yaml, self.ctx.yaml_file)
        except PipelineError as exc:
            await self.reporter.started(BuildStarted(runner_time=time.time()))
            await self._system(f"the pipeline is invalid:\n{exc}\n")
            return BuildOutcome("error", f"invalid pipeline:\n{exc}")
        await self.reporter.started(BuildStarted(steps=_plan(pipeline), runner_time=time.time()))
        self._prepare()
        async with self.executor:
            return await self._run_sequential(pipeline)

    def _prepare(self) -> None:
        self.ctx.volume.mkdir(parents=True, exist_ok=True)
        if self.ctx.event is not None:
            (self.ctx.volume / "event.json").write_text(json.dumps(self.ctx.event, indent=2) + "\n")
        cfexport.install(self.ctx.scratch / "bin")
        self.variables = {
            **build_system_variables(
                build_id=self.ctx.build_id,
                build_url=self.ctx.build_url,
                build_timestamp_ms=int(self.ctx.created_at * 1000),
                trigger=self.ctx.trigger,
                initiator=self.ctx.initiator,
                pipeline=self.ctx.pipeline,
                account=self.ctx.account,
                volume_path=str(self.ctx.volume),
            ),
            **self.ctx.variables,
            **self.ctx.secrets,
        }

    async def _run_sequential(self, pipeline: Pipeline) -> BuildOutcome:
        failed: list[str] = []
        stop_reason: str | None = None
        for step in pipeline.steps:
            if stop_reason is not None:
                await self.reporter.step(step.name, StepUpdate(status="skipped", message=stop_reason))
                continue
            result = await self._run_step(step)
            if result.status == "terminated":
                stop_reason = "the build was terminated"
            elif result.status in ("failure", "error"):
                failed.append(step.name)
                if self._truthy(step.fail_fast, default=True):
                    stop_reason = f"step {step.name} failed"
        if self.cancelled:
            return BuildOutcome("terminated", self._cancel_reason)
        if stop_reason is not None:
            return BuildOutcome("failure", stop_reason)
        if failed and self._truthy(pipeline.strict_fail_fast, default=False):
            return BuildOutcome("failure", "steps failed: " + ", ".join(failed))
        return BuildOutcome("success")

    async def _run_step(self, step: Step) -> _StepResult:
        started = time.time()
        await self.reporter.step(step.name, StepUpdate(status="running", title=step.title, started_at=started))
        if self.cancelled:
            result = _StepResult("terminated", message=self._cancel_reason)
        elif step.type != "freestyle":
            result = _StepResult(
                "error",
                message=f"step type {step.type!r} is not supported by this runner's executor ({self.executor.name})",
            )
        elif step.when is not None:
            result = _StepResult("error", message="`when:` conditions are not supported by this runner yet")
        else:
            result = await self._run_freestyle(step)
        if result.message and result.status != "success":
            await self.reporter.log(step.name, f"\n[outpost] {result.message}\n".encode())
        await self.reporter.step(
            step.name,
            StepUpdate(
                status=result.status,
                title=step.title,
                started_at=started,
                finished_at=time.time(),
                exit_code=result.exit_code,
                message=result.message,
            ),
        )
        return result

    async def _run_freestyle(self, step: Step) -> _StepResult:
        job = self._job(step)
        if not self._noticed and (notice := self.executor.notice(job)):
            self._noticed = True
            await self._system(notice + "\n")

        masker = Masker(self._masked)

        async def output(chunk: bytes) -> None:
            if shown := masker.feed(chunk):
                await self.reporter.log(step.name, shown)

        try:
            return await self._watch(step, job, output)
        finally:
            if rest := masker.flush():
                await self.reporter.log(step.name, rest)

    async def _watch(self, step: Step, job: StepJob, output: Output) -> _StepResult:
        """Runs the job until it ends, times out or the build is cancelled."""
        run = asyncio.create_task(self.executor.run(job, output))
        cancel = asyncio.create_task(self._cancel.wait())
        try:
            done, _ = await asyncio.wait({run, cancel}, timeout=step.timeout, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            run.cancel()  # the executor kills the step's processes before this await returns
            with contextlib.suppress(asyncio.CancelledError, ExecutorError):
                await run
            raise
        finally:
            cancel.cancel()
        if run not in done:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, ExecutorError):
                await run
            if self.cancelled:
                return _StepResult("terminated", message=self._cancel_reason)
            return _StepResult("failure", message=f"step timed out after {_duration(step.timeout or 0)}")
        try:
            code = run.result()
        except ExecutorError as exc:
            return _StepResult("error", message=str(exc))
        self._collect_exports()
        if code == 0:
            return _StepResult("success", exit_code=0)
        return _StepResult("failure", exit_code=code, message=f"exited with code {code}")

    def _job(self, step: Step) -> StepJob:
        variables = {**self.variables, "CF_STEP_NAME": step.name}
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update(variables)
        for entry in step.environment:
            key, _, value = substitute(entry, variables).partition("=")
            env[key] = value
        commands = [substitute(c, variables) for c in step.commands]
        return StepJob(
            step=step.name,
            script="set -e\n" + "\n".join(commands) + "\n",
            env=env,
            workdir=self._workdir(step, variables),
            shell=step.shell,
            image=substitute(step.image, variables) if step.image else None,
            extra_path=[self.ctx.scratch / "bin"],
        )

    def _workdir(self, step: Step, variables: Mapping[str, str]) -> Path:
        raw = substitute(step.working_directory or "", variables).strip()
        volume = self.ctx.volume
        if not raw or raw in (".", "./"):
            return volume
        if raw == VOLUME_ALIAS or raw.startswith(VOLUME_ALIAS + "/"):
            return volume / raw[len(VOLUME_ALIAS) :].lstrip("/")
        path = Path(raw)
        return path if path.is_absolute() else volume / path

    def _collect_exports(self) -> None:
        volume = self.ctx.volume
        with contextlib.suppress(FileNotFoundError):
            self.variables.update(parse_export_file((volume / EXPORT_FILE).read_text(errors="replace")))
        with contextlib.suppress(FileNotFoundError):
            names = (volume / cfexport.MASK_FILE).read_text(errors="replace").split()
            self._masked.update(self.variables[n] for n in names if n in self.variables)

    def _truthy(self, value: bool | str | None, *, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        resolved = substitute(value, self.variables).strip().lower()
        if resolved in ("true", "false"):
            return resolved == "true"
        return default

    async def _system(self, text: str) -> None:
        masker = Masker(self._masked)
        shown = masker.feed(f"[outpost] {text}".encode()) + masker.flush()
        await self.reporter.log(SYSTEM_STREAM, shown)


def _plan(pipeline: Pipeline) -> list[StepPlan]:
    plan: list[StepPlan] = []

    def walk(steps: list[Step], parent: str | None) -> None:
        for s in steps:
            plan.append(StepPlan(name=s.name, title=s.title, stage=s.stage, type=s.type, parent=parent))
            walk(s.steps, s.name)

    walk(pipeline.steps, None)
    return plan


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
