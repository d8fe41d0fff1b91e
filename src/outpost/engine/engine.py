"""The build engine: plans a pipeline and runs its steps through an executor.

The engine knows nothing of HTTP: it reports through a `Reporter` (the runner's outbox in production,
a list in tests) and runs processes through an `Executor`. One engine runs one build.

What it does, in order: parse the YAML (a problem ends the build as `error`), expand `scale`/`matrix`
into parallel steps, report the plan, run the pipeline's `on_elected` hook, the steps (in file order,
or as a dependency graph in `mode: parallel`), then `on_success` or `on_fail`, then `on_finish`.
Each step: its `when` decides run or skip; its own `on_elected` hook; its body, retried as `retry`
says, each attempt bounded by `timeout`; its `on_success`/`on_fail` and `on_finish` hooks.

This module holds that order; the rest lives next door: what the build knows (`state`) and decides from it
(`stepconditions`), what stops together (`scopes`), the step bodies (`commands` for freestyle steps and `hooks`,
`clonestep`, `imagesteps`, `approval`), and logs masked on their way to the `Reporter` (`reporting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from outpost.containers.registries import Registries
from outpost.deploy import clusters
from outpost.engine import cfexport, clonestep, stepconditions
from outpost.engine.approval import Approvals
from outpost.engine.commands import PASSED_THROUGH, Commands
from outpost.engine.deploystep import DeploySteps
from outpost.engine.hooks import run_hook
from outpost.engine.imagesteps import ImageSteps
from outpost.engine.plan import plan_of, planned
from outpost.engine.reporting import MaskedReporter, Reporter, log_system
from outpost.engine.restart import Restart
from outpost.engine.results import FAILED, StepResult, duration
from outpost.engine.scopes import Scope, sleep
from outpost.engine.state import VOLUME_ALIAS, BuildState
from outpost.errors import PipelineError, ProtocolError
from outpost.executors.base import Executor
from outpost.pipelines.spec import Pipeline, Step
from outpost.pipelines.variables import EXPORT_FILE, build_system_variables, revision_variables, substitute
from outpost.wire import (
    SYSTEM_STREAM,
    BuildStarted,
    ClusterAccess,
    FinalBuildStatus,
    GitAccess,
    RegistryAccess,
    RunBuildTask,
    StepUpdate,
)

__all__ = [
    "PASSED_THROUGH",
    "VOLUME_ALIAS",
    "BuildContext",
    "BuildEngine",
    "BuildOutcome",
    "Collect",
    "Reporter",
    "Restart",
    "StepFiles",
]


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
    integrations: dict[str, GitAccess] = field(default_factory=dict)  # git integrations the build may use
    registries: dict[str, RegistryAccess] = field(default_factory=dict)  # registry integrations the build may use
    clusters: dict[str, ClusterAccess] = field(default_factory=dict)  # kubernetes integrations the build may use
    clusters_refused: list[str] = field(default_factory=list)  # the account's others: named in a refusal
    runner_secrets: Mapping[str, str] = field(default_factory=dict)  # the runner's own secrets (--secrets-file)
    restart: Restart | None = None  # a restart from the failed step, as far as the runner found it safe

    @classmethod
    def from_task(
        cls,
        task: RunBuildTask,
        *,
        volume: Path,
        scratch: Path,
        runner: str = "",
        runner_secrets: Mapping[str, str] | None = None,
    ) -> BuildContext:
        """The context of the build a task describes: every field the two share by name is the task's (its mappings
        copied, as the engine adds to them); the rest is where and by whom the runner runs it. What the task holds
        for the runner alone (the lease, the job token, where to read the YAML) stays out."""
        shared = {f.name for f in fields(cls)} & RunBuildTask.model_fields.keys()
        taken: dict[str, Any] = {name: _copy(getattr(task, name)) for name in shared}
        return cls(
            **taken,
            volume=volume,
            scratch=scratch,
            runner=runner,
            runner_secrets=dict(runner_secrets or {}),
        )


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _first_deploy_cluster(pipeline: Pipeline) -> str | None:
    """The cluster the pipeline's first deploy step names (KUBECONFIG's current context), if it names one as it is."""
    for step in pipeline.all_steps():
        name = step.fields.get("cluster") if step.type == "deploy" else None
        if isinstance(name, str) and "${{" not in name:
            return name
    return None


@dataclass
class StepFiles:
    """What a step marked for the build page: globs relative to `workdir` (or under /codefresh/volume)."""

    step: str
    workdir: Path  # on the runner's side of the volume
    artifacts: list[str]
    junit: list[str]


# The runner's collector: the step's files, a way to say something in its log, and the build's masking.
Collect = Callable[[StepFiles, Callable[[str], Awaitable[None]], Callable[[str | None], str | None]], Awaitable[None]]


@dataclass
class BuildOutcome:
    status: FinalBuildStatus
    message: str | None = None


class BuildEngine:
    def __init__(self, ctx: BuildContext, executor: Executor, reporter: Reporter) -> None:
        self.ctx = ctx
        self.executor = executor
        self._root = Scope()
        self._cancelled = False
        self.registries = Registries(ctx.registries, ctx.runner_secrets)  # never raises; lookups do
        self.state = BuildState(
            ctx.volume,
            branch=ctx.branch,
            masked=set(ctx.secrets.values())
            | self.registries.passwords()
            | clusters.secret_values(ctx.clusters.values(), ctx.runner_secrets),
        )
        self.reporter = MaskedReporter(reporter, self.state.masked)  # every message, not only step output
        self._steps: dict[str, Step] = {}
        self.commands = Commands(executor, self.reporter, self.state, scratch=ctx.scratch, registries=self.registries)
        self.images = ImageSteps(executor, self.reporter, self.state, self.registries)
        self.deploys = DeploySteps(self.reporter, self.state, self.registries, ctx.clusters, ctx.runner_secrets)
        self.approvals = Approvals(self.state, self.reporter, build_id=ctx.build_id, cancel=self.cancel)
        self.collect: Collect | None = None  # the runner's: what a step marked (`artifacts`, `junit`) goes up

    # --- control from outside ----------------------------------------------------------------------

    def cancel(self, reason: str = "cancel requested") -> None:
        self._cancelled = True
        self._root.stop(reason)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def decide(self, step: str, decision: str, by: str = "") -> bool:
        """An approval answer for a pending-approval step. True if it was new."""
        return self.approvals.decide(step, decision, by)

    def use_pipeline_file(self, yaml: str, path: str, variables: Mapping[str, str]) -> None:
        """The YAML to run, read from the repository before `run`, and the CF_* variables of the commit it was
        read at (the build's own variables win)."""
        self.ctx.yaml = yaml
        self.ctx.yaml_file = path
        for name, value in variables.items():
            self.ctx.variables.setdefault(name, value)

    # --- the build ---------------------------------------------------------------------------------

    async def run(self) -> BuildOutcome:
        if self.ctx.runner:
            await self._system(f"{self.ctx.runner}\n")
        try:
            pipeline = planned(self.ctx.yaml, self.ctx.yaml_file)
        except PipelineError as exc:
            await self.reporter.started(BuildStarted(runner_time=time.time()))
            await self._system(f"the pipeline is invalid:\n{exc}\n")
            return BuildOutcome("error", f"invalid pipeline:\n{exc}")
        await self.reporter.started(BuildStarted(steps=plan_of(pipeline), runner_time=time.time()))
        if self.ctx.restart and self.ctx.restart.note:
            await self._system(self.ctx.restart.note + "\n")
        for w in pipeline.warnings:  # tolerated, as the original does, but said where the author will look
            await self._system(f"{w.file}:{w.line}:{w.column}: warning: {w.message}\n")
        self._steps = {s.name: s for s in pipeline.all_steps()}
        self.commands.services = pipeline.services
        if self.ctx.clusters:
            self.commands.kubeconfig = clusters.kubeconfig(
                self.ctx.clusters, self.ctx.runner_secrets, current=_first_deploy_cluster(pipeline)
            )
        self.state.states = dict.fromkeys(self._steps, "pending")
        self._prepare()
        if (refused := await self._refuse_clusters(pipeline)) is not None:
            return refused
        async with self.executor:
            outcome = await self._run_pipeline(pipeline)
        outcome.message = self.reporter.mask(outcome.message)  # the build's message is shown like its log
        return outcome

    def _prepare(self) -> None:
        self.ctx.volume.mkdir(parents=True, exist_ok=True)
        for leftover in (EXPORT_FILE, cfexport.MASK_FILE, "event.json"):  # a kept volume: the last build's
            (self.ctx.volume / leftover).unlink(missing_ok=True)
        if self.ctx.event is not None:
            (self.ctx.volume / "event.json").write_text(json.dumps(self.ctx.event, indent=2) + "\n")
        cfexport.install(self.ctx.scratch / "bin")
        self.state.variables = {
            # What the build was asked to build: a trigger's variables say more.
            **revision_variables(self.ctx.branch, self.ctx.revision),
            **build_system_variables(
                build_id=self.ctx.build_id,
                build_url=self.ctx.build_url,
                build_timestamp_ms=int(self.ctx.created_at * 1000),
                trigger=self.ctx.trigger,
                initiator=self.ctx.initiator,
                pipeline=self.ctx.pipeline,
                account=self.ctx.account,
                volume_path=self.executor.volume_in_step(),
            ),
            "CF_VOLUME_NAME": f"outpost-volume-{self.ctx.build_id}",  # `NAME:${{CF_VOLUME_PATH}}` mounts the volume
            **self.ctx.variables,
            **self.ctx.secrets,
        }

    async def _run_pipeline(self, pipeline: Pipeline) -> BuildOutcome:
        hooks = pipeline.hooks or {}
        outcome: BuildOutcome | None = None
        if "on_elected" in hooks and not await self._hook("on_elected", hooks["on_elected"], SYSTEM_STREAM):
            outcome = BuildOutcome("failure", "the pipeline's on_elected hook failed")
            for step in pipeline.steps:
                await self._skip(step, "the pipeline's on_elected hook failed")
        if outcome is None:
            body = Scope(self._root)  # stopped by a failing step; the root only by a cancel
            if pipeline.mode == "parallel":
                await self._graph(pipeline.steps, body)
            else:
                await self._sequence(pipeline.steps, body)
            outcome = self._outcome(pipeline, body)
        self.state.workflow = outcome.status
        after = "on_success" if outcome.status == "success" else "on_fail"
        if self.cancelled:
            if any(name in hooks for name in ("on_success", "on_fail", "on_finish")):  # else nothing to say
                await self._system("hooks after the steps do not run: the build was terminated\n")
            return outcome
        for name in (after, "on_finish"):
            if name in hooks:
                await self._hook(name, hooks[name], SYSTEM_STREAM)  # never changes the outcome
        return outcome

    def _outcome(self, pipeline: Pipeline, body: Scope) -> BuildOutcome:
        if self.cancelled:
            return BuildOutcome("terminated", self._root.why)
        if pipeline.success_criteria:
            ok, why = stepconditions.criteria(self.state, pipeline.success_criteria, pipeline.steps)
            return BuildOutcome("success") if ok else BuildOutcome("failure", why)
        if body.stopped:
            return BuildOutcome("failure", body.why)
        failed = [s.name for s in pipeline.steps if self.state.states.get(s.name) in FAILED]
        if failed and self.state.truthy(pipeline.strict_fail_fast, default=False):
            return BuildOutcome("failure", "steps failed: " + ", ".join(failed))
        return BuildOutcome("success")

    # --- orders of execution -----------------------------------------------------------------------

    async def _sequence(self, steps: list[Step], scope: Scope) -> None:
        """File order; each step's `when` is evaluated once, when its turn comes."""
        for step in steps:
            if scope.stopped:
                await self._skip(step, scope.why)
                continue
            verdict = stepconditions.when(self.state, step, final=True)
            if verdict is not None:
                await self._skip(step, verdict)
                continue
            state = await self._execute(step, scope)
            if state == "terminated":
                scope.stop(self._root.why or f"step {step.name} was terminated")
            elif state in FAILED and self.state.truthy(step.fail_fast, default=True):
                scope.stop(f"step {step.name} failed")

    async def _graph(self, steps: list[Step], scope: Scope) -> None:
        """`mode: parallel`: every pending step whose `when` holds starts; the rest are looked at
        again whenever a step finishes, until nothing can change."""
        pending = list(steps)
        running: dict[asyncio.Task[str], Step] = {}
        inner = Scope(scope)
        try:
            while pending or running:
                changed = True
                while changed and pending:
                    changed = False
                    for step in list(pending):
                        if inner.stopped:
                            break
                        verdict = stepconditions.when(self.state, step, final=False)
                        if verdict == "wait":
                            continue
                        pending.remove(step)
                        changed = True
                        if verdict is None:
                            self.state.states[step.name] = "running"
                            running[asyncio.create_task(self._execute(step, inner))] = step
                        else:
                            await self._skip(step, verdict)
                if inner.stopped or not running:
                    for step in pending:
                        reason = inner.why if inner.stopped else stepconditions.when(self.state, step, final=True)
                        await self._skip(step, reason or "its condition can no longer be met")
                    pending.clear()
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    state = task.result()
                    if state in FAILED and self.state.truthy(step.fail_fast, default=True):
                        inner.stop(f"step {step.name} failed")
                        scope.stop(f"step {step.name} failed")
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _parallel_step(self, step: Step, scope: Scope) -> StepResult:
        """The children of a `parallel` step all start at once (each after its own `when`)."""

        async def child(c: Step) -> None:
            verdict = stepconditions.when(self.state, c, final=True)
            if verdict is not None:
                await self._skip(c, verdict)
            else:
                await self._execute(c, scope)

        await asyncio.gather(*(child(c) for c in step.steps))
        if self.cancelled:
            return StepResult("terminated", message=self._root.why)
        ok, why = stepconditions.criteria(self.state, step.fields.get("success_criteria"), step.steps)
        if ok:
            return StepResult("success")
        if not self.state.truthy(step.fail_fast, default=True):
            return StepResult("success", message=f"{why} (tolerated: fail_fast is false)")
        return StepResult("failure", message=why)

    # --- one step ----------------------------------------------------------------------------------

    async def _execute(self, step: Step, scope: Scope) -> str:
        if self.ctx.restart and (why := self.ctx.restart.skip(step)):
            self.state.record(step, "success")  # for conditions and `steps.X.result`, as it ended then
            await self.reporter.step(step.name, StepUpdate(status="skipped", title=step.title, message=why))
            return "success"
        started = time.time()
        self.state.states[step.name] = "running"
        await self.reporter.step(step.name, StepUpdate(status="running", title=step.title, started_at=started))
        ran = False  # the step's own body ran (so it may have left files to collect)
        if scope.stopped:
            result = StepResult("terminated", message=scope.why)
        elif step.type == "parallel":
            result = await self._parallel_step(step, scope)
        elif step.type == "pending-approval":
            result = await self.approvals.wait(step, scope)
        else:
            result, ran = await self._with_hooks(step, scope), True
        if step.type == "git-clone" and self.ctx.restart and (note := self.ctx.restart.after_clone(step, self.state)):
            await self.reporter.note(step.name, note)
        if result.message and result.status not in ("success", "approved"):
            await self.reporter.note(step.name, result.message)
        if ran:
            await self._collect(step)  # after the step's own last word, before its final state
        self.state.record(step, result.status)
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
        return result.status

    async def _with_hooks(self, step: Step, scope: Scope) -> StepResult:
        hooks = step.fields.get("hooks") or {}
        if not isinstance(hooks, dict):
            hooks = {}
        if "on_elected" in hooks and not await self._hook("on_elected", hooks["on_elected"], step.name, scope):
            result = StepResult("failure", message="the step's on_elected hook failed")
        else:
            result = await self._attempts(step, scope)
        self.state.record(step, result.status)  # the hooks below may look at steps.X.result
        after = "on_success" if result.status == "success" else "on_fail"
        for name in (after, "on_finish"):
            if name in hooks and not self.cancelled:
                await self._hook(name, hooks[name], step.name, scope)
        return result

    async def _attempts(self, step: Step, scope: Scope) -> StepResult:
        retry = step.fields.get("retry") if isinstance(step.fields.get("retry"), dict) else {}
        attempts = int(retry.get("maxAttempts", 1)) if retry else 1
        delay = float(retry.get("delay", 5)) if retry else 5.0
        factor = float(retry.get("exponentialFactor", 1)) if retry else 1.0
        result = StepResult("error", message="the step did not run")
        for attempt in range(1, attempts + 1):
            result = await self._body(
                step, scope, {"CF_CURRENT_ATTEMPT": str(attempt), "CF_MAX_ATTEMPTS": str(attempts)}
            )
            if result.status in ("success", "terminated") or scope.stopped or attempt == attempts:
                break
            wait = delay * factor ** (attempt - 1)
            await self.reporter.note(
                step.name, f"attempt {attempt} of {attempts} failed ({result.message}); retrying in {duration(wait)}"
            )
            if await sleep(wait, scope):
                return StepResult("terminated", message=scope.why)
        return result

    async def _body(self, step: Step, scope: Scope, extra: dict[str, str]) -> StepResult:
        if step.type == "freestyle":
            return await self.commands.run(step, scope, step.commands, step.environment, extra)
        if step.type == "git-clone":
            return await clonestep.run_clone(
                step,
                scope,
                state=self.state,
                reporter=self.reporter,
                integrations=self.ctx.integrations,
                runner_secrets=self.ctx.runner_secrets,
            )
        if step.type == "deploy":
            return await self.deploys.run(step, scope)
        if step.type in self.executor.step_types:
            return await self.images.run(step, scope)
        return StepResult(
            "error",
            message=f"step type {step.type!r} is not supported by this runner's executor ({self.executor.name})",
        )

    async def _collect(self, step: Step) -> None:
        """Hands what the step marked to the runner, whatever its result (a failing step's test report is the one
        most wanted); never on a cancelled build. Nothing here changes the step's result."""
        if self.collect is None or self.cancelled or not (step.fields.get("artifacts") or step.fields.get("junit")):
            return
        values = self.state.scope_vars()

        def globs(name: str) -> list[str]:
            return [substitute(str(p), values) for p in step.fields.get(name) or []]

        async def note(text: str) -> None:
            await self.reporter.note(step.name, text)

        marked = StepFiles(step.name, self.state.workdir(step, values), globs("artifacts"), globs("junit"))
        try:
            await self.collect(marked, note, self.reporter.mask)
        except ProtocolError:  # a lost lease or a revocation ends the build here as anywhere else
            raise
        except Exception as exc:  # whatever else goes wrong, the step that ran keeps its result
            await note(f"warning: the step's files were not collected: {type(exc).__name__}: {exc}")

    async def _refuse_clusters(self, pipeline: Pipeline) -> BuildOutcome | None:
        """Deploy steps that name a cluster this build may not use end the build before any step runs, saying
        why. A name that only a variable set during the build gives is checked when its step runs."""
        reasons = []
        for step in pipeline.all_steps():
            named = step.fields.get("cluster") if step.type == "deploy" else None
            name = substitute(str(named), self.state.variables).strip() if named is not None else ""
            if not name or "${{" in name:
                continue
            why = clusters.refusal(self.ctx.clusters, self.ctx.clusters_refused, name, self.ctx.pipeline)
            if why:
                reasons.append(f"step {step.name}: {why}")
        if not reasons:
            return None
        await self._system("no step runs: " + "\n".join(reasons) + "\n")
        for step in pipeline.steps:
            await self._skip(step, "the pipeline names a cluster it may not use")
        return BuildOutcome("error", "\n".join(reasons))

    async def _skip(self, step: Step, reason: str) -> None:
        self.state.record(step, "skipped")
        await self.reporter.step(step.name, StepUpdate(status="skipped", title=step.title, message=reason))
        for child in step.steps:
            await self._skip(child, reason)

    async def _hook(self, name: str, hook: Any, stream: str, scope: Scope | None = None) -> bool:
        scope = scope or self._root
        return await run_hook(
            name, hook, stream, scope, commands=self.commands, state=self.state, reporter=self.reporter
        )

    async def _system(self, text: str) -> None:
        await log_system(self.reporter, self.state.masked, text)
