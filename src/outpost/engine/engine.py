"""The build engine: plans a pipeline and runs its steps through an executor.

The engine knows nothing of HTTP: it reports through a `Reporter` (the runner's outbox in production,
a list in tests) and runs processes through an `Executor`. One engine runs one build.

What it does, in order: parse the YAML (a problem ends the build as `error`), expand `scale`/`matrix`
into parallel steps, report the plan, run the pipeline's `on_elected` hook, the steps (in file order,
or as a dependency graph in `mode: parallel`), then `on_success` or `on_fail`, then `on_finish`.
Each step: its `when` decides run or skip; its own `on_elected` hook; its body, retried as `retry`
says, each attempt bounded by `timeout`; its `on_success`/`on_fail` and `on_finish` hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from outpost.containers import images
from outpost.containers.registries import Registries
from outpost.engine import cfexport, containersteps, gitaccess, gitclone
from outpost.engine.masking import Masker
from outpost.engine.plan import expand, plan_of
from outpost.errors import ExecutorError, PipelineError
from outpost.executors.base import Executor, Output, PushJob, StepJob
from outpost.pipelines.parsing import load_pipeline
from outpost.pipelines.spec import Location, Pipeline, Step
from outpost.pipelines.variables import (
    EXPORT_FILE,
    build_system_variables,
    normalize_branch_tag,
    parse_export_file,
    substitute,
)
from outpost.pipelines.when import evaluate_when
from outpost.wire import (
    SYSTEM_STREAM,
    BuildStarted,
    FinalBuildStatus,
    GitAccess,
    RegistryAccess,
    StepStatus,
    StepUpdate,
)

VOLUME_ALIAS = "/codefresh/volume"
# Only these variables of the runner's own environment reach a step: never its tokens.
PASSED_THROUGH = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip
FAILED = frozenset({"failure", "error", "denied"})  # states that fail a build unless fail_fast says otherwise
APPROVAL_DEFAULT_HOURS = 168.0
_UNITS = {"hours": 3600.0, "minutes": 60.0}


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
    integrations: dict[str, GitAccess] = field(default_factory=dict)  # git integrations the build may use
    registries: dict[str, RegistryAccess] = field(default_factory=dict)  # registry integrations the build may use
    runner_secrets: Mapping[str, str] = field(default_factory=dict)  # the runner's own secrets (--secrets-file)


@dataclass
class BuildOutcome:
    status: FinalBuildStatus
    message: str | None = None


@dataclass
class _StepResult:
    status: StepStatus
    exit_code: int | None = None
    message: str | None = None


class _Scope:
    """A set of steps that can be stopped together: the whole build (cancel), or the steps of a
    `mode: parallel` pipeline when one of them fails fast."""

    def __init__(self, parent: _Scope | None = None) -> None:
        self.parent = parent
        self.event = asyncio.Event()
        self.reason = ""

    def stop(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set() or (self.parent is not None and self.parent.stopped)

    @property
    def why(self) -> str:
        if self.event.is_set():
            return self.reason
        return self.parent.why if self.parent is not None else ""

    def events(self) -> list[asyncio.Event]:
        return [self.event, *(self.parent.events() if self.parent else [])]


class BuildEngine:
    def __init__(self, ctx: BuildContext, executor: Executor, reporter: Reporter) -> None:
        self.ctx = ctx
        self.executor = executor
        self.reporter = reporter
        self.variables: dict[str, str] = {}
        self.states: dict[str, str] = {}  # step name -> its state, for `when.steps` and `steps.X.result`
        self.members: dict[str, str] = {}  # `steps.X.<member>` values for ${{...}} and conditions
        self.workflow = "running"
        self._root = _Scope()
        self._cancelled = False
        self._noticed = False
        self.registries = Registries(ctx.registries, ctx.runner_secrets)  # never raises; lookups do
        self._masked: set[str] = set(ctx.secrets.values()) | self.registries.passwords()
        self._decisions: dict[str, asyncio.Future[tuple[str, str]]] = {}
        self._steps: dict[str, Step] = {}
        self._main_clone: Path | None = None
        self._built: dict[str, str] = {}  # a build step's image reference and id -> its image name
        self._services: dict[str, Any] = {}  # the pipeline's root `services`

    # --- control from outside ----------------------------------------------------------------------

    def cancel(self, reason: str = "cancel requested") -> None:
        self._cancelled = True
        self._root.stop(reason)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def decide(self, step: str, decision: str, by: str = "") -> bool:
        """An approval answer for a pending-approval step. True if it was new."""
        if decision not in ("approved", "denied"):
            return False
        future = self._decision(step)
        if future.done():
            return False
        future.set_result((decision, by))
        return True

    def _decision(self, step: str) -> asyncio.Future[tuple[str, str]]:
        if step not in self._decisions:
            self._decisions[step] = asyncio.get_running_loop().create_future()
        return self._decisions[step]

    # --- the build ---------------------------------------------------------------------------------

    async def run(self) -> BuildOutcome:
        if self.ctx.runner:
            await self._system(f"{self.ctx.runner}\n")
        try:
            pipeline = expand(load_pipeline(self.ctx.yaml, self.ctx.yaml_file))
        except PipelineError as exc:
            await self.reporter.started(BuildStarted(runner_time=time.time()))
            await self._system(f"the pipeline is invalid:\n{exc}\n")
            return BuildOutcome("error", f"invalid pipeline:\n{exc}")
        await self.reporter.started(BuildStarted(steps=plan_of(pipeline), runner_time=time.time()))
        self._steps = {s.name: s for s in pipeline.all_steps()}
        self._services = pipeline.services
        self.states = dict.fromkeys(self._steps, "pending")
        self._prepare()
        async with self.executor:
            return await self._run_pipeline(pipeline)

    def _prepare(self) -> None:
        self.ctx.volume.mkdir(parents=True, exist_ok=True)
        if self.ctx.event is not None:
            (self.ctx.volume / "event.json").write_text(json.dumps(self.ctx.event, indent=2) + "\n")
        cfexport.install(self.ctx.scratch / "bin")
        asked: dict[str, str] = {}  # what the build was asked to build: a trigger's variables say more
        if self.ctx.branch:
            tag = normalize_branch_tag(self.ctx.branch)
            asked |= {
                "CF_BRANCH": self.ctx.branch,
                "CF_BRANCH_TAG_NORMALIZED": tag,
                "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": tag.lower(),
            }
        if self.ctx.revision:
            asked |= {"CF_REVISION": self.ctx.revision, "CF_SHORT_REVISION": self.ctx.revision[:7]}
        self.variables = {
            **asked,
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
            body = _Scope(self._root)  # stopped by a failing step; the root only by a cancel
            if pipeline.mode == "parallel":
                await self._graph(pipeline.steps, body)
            else:
                await self._sequence(pipeline.steps, body)
            outcome = self._outcome(pipeline, body)
        self.workflow = outcome.status
        if self.cancelled:
            await self._system("hooks after the steps do not run: the build was terminated\n")
            return outcome
        after = "on_success" if outcome.status == "success" else "on_fail"
        for name in (after, "on_finish"):
            if name in hooks:
                await self._hook(name, hooks[name], SYSTEM_STREAM)  # never changes the outcome
        return outcome

    def _outcome(self, pipeline: Pipeline, body: _Scope) -> BuildOutcome:
        if self.cancelled:
            return BuildOutcome("terminated", self._root.why)
        if pipeline.success_criteria:
            ok, why = self._criteria(pipeline.success_criteria, pipeline.steps)
            return BuildOutcome("success") if ok else BuildOutcome("failure", why)
        if body.stopped:
            return BuildOutcome("failure", body.why)
        failed = [s.name for s in pipeline.steps if self.states.get(s.name) in FAILED]
        if failed and self._truthy(pipeline.strict_fail_fast, default=False):
            return BuildOutcome("failure", "steps failed: " + ", ".join(failed))
        return BuildOutcome("success")

    # --- orders of execution -----------------------------------------------------------------------

    async def _sequence(self, steps: list[Step], scope: _Scope) -> None:
        """File order; each step's `when` is evaluated once, when its turn comes."""
        for step in steps:
            if scope.stopped:
                await self._skip(step, scope.why)
                continue
            verdict = self._when(step, final=True)
            if verdict is not None:
                await self._skip(step, verdict)
                continue
            state = await self._execute(step, scope)
            if state == "terminated":
                scope.stop(self._root.why or f"step {step.name} was terminated")
            elif state in FAILED and self._truthy(step.fail_fast, default=True):
                scope.stop(f"step {step.name} failed")

    async def _graph(self, steps: list[Step], scope: _Scope) -> None:
        """`mode: parallel`: every pending step whose `when` holds starts; the rest are looked at
        again whenever a step finishes, until nothing can change."""
        pending = list(steps)
        running: dict[asyncio.Task[str], Step] = {}
        inner = _Scope(scope)
        try:
            while pending or running:
                changed = True
                while changed and pending:
                    changed = False
                    for step in list(pending):
                        if inner.stopped:
                            break
                        verdict = self._when(step, final=False)
                        if verdict == "wait":
                            continue
                        pending.remove(step)
                        changed = True
                        if verdict is None:
                            self.states[step.name] = "running"
                            running[asyncio.create_task(self._execute(step, inner))] = step
                        else:
                            await self._skip(step, verdict)
                if inner.stopped or not running:
                    for step in pending:
                        reason = inner.why if inner.stopped else self._when(step, final=True)
                        await self._skip(step, reason or "its condition can no longer be met")
                    pending.clear()
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    state = task.result()
                    if state in FAILED and self._truthy(step.fail_fast, default=True):
                        inner.stop(f"step {step.name} failed")
                        scope.stop(f"step {step.name} failed")
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _parallel_step(self, step: Step, scope: _Scope) -> _StepResult:
        """The children of a `parallel` step all start at once (each after its own `when`)."""

        async def child(c: Step) -> None:
            verdict = self._when(c, final=True)
            if verdict is not None:
                await self._skip(c, verdict)
            else:
                await self._execute(c, scope)

        await asyncio.gather(*(child(c) for c in step.steps))
        if self.cancelled:
            return _StepResult("terminated", message=self._root.why)
        ok, why = self._criteria(step.fields.get("success_criteria"), step.steps)
        if ok:
            return _StepResult("success")
        if not self._truthy(step.fail_fast, default=True):
            return _StepResult("success", message=f"{why} (tolerated: fail_fast is false)")
        return _StepResult("failure", message=why)

    def _criteria(self, criteria: Mapping[str, Any] | None, steps: list[Step]) -> tuple[bool, str]:
        """`success_criteria` over a set of steps: by default none of them may have failed."""
        criteria = criteria or {}
        names = [s.name for s in steps]
        rules = criteria.get("steps") or {}
        if rules.get("only"):
            names = [n for n in names if n in set(rules["only"])]
        if rules.get("ignore"):
            names = [n for n in names if n not in set(rules["ignore"])]
        failed = [n for n in names if self.states.get(n) in FAILED or self.states.get(n) == "terminated"]
        if failed:
            return False, "steps failed: " + ", ".join(failed)
        if condition := criteria.get("condition"):
            result = self._evaluate({"condition": condition}, final=True)
            if result is not None:
                return False, f"success_criteria: {result}"
        return True, ""

    # --- one step ----------------------------------------------------------------------------------

    async def _execute(self, step: Step, scope: _Scope) -> str:
        started = time.time()
        self.states[step.name] = "running"
        await self.reporter.step(step.name, StepUpdate(status="running", title=step.title, started_at=started))
        if scope.stopped:
            result = _StepResult("terminated", message=scope.why)
        elif step.type == "parallel":
            result = await self._parallel_step(step, scope)
        elif step.type == "pending-approval":
            result = await self._approval(step, scope)
        else:
            result = await self._with_hooks(step, scope)
        if result.message and result.status not in ("success", "approved"):
            await self.reporter.log(step.name, f"\n[outpost] {result.message}\n".encode())
        self._record(step, result.status)
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

    async def _with_hooks(self, step: Step, scope: _Scope) -> _StepResult:
        hooks = step.fields.get("hooks") or {}
        if not isinstance(hooks, dict):
            hooks = {}
        if "on_elected" in hooks and not await self._hook("on_elected", hooks["on_elected"], step.name, scope):
            result = _StepResult("failure", message="the step's on_elected hook failed")
        else:
            result = await self._attempts(step, scope)
        self._record(step, result.status)  # the hooks below may look at steps.X.result
        after = "on_success" if result.status == "success" else "on_fail"
        for name in (after, "on_finish"):
            if name in hooks and not self.cancelled:
                await self._hook(name, hooks[name], step.name, scope)
        return result

    async def _attempts(self, step: Step, scope: _Scope) -> _StepResult:
        retry = step.fields.get("retry") if isinstance(step.fields.get("retry"), dict) else {}
        attempts = int(retry.get("maxAttempts", 1)) if retry else 1
        delay = float(retry.get("delay", 5)) if retry else 5.0
        factor = float(retry.get("exponentialFactor", 1)) if retry else 1.0
        result = _StepResult("error", message="the step did not run")
        for attempt in range(1, attempts + 1):
            result = await self._body(
                step, scope, {"CF_CURRENT_ATTEMPT": str(attempt), "CF_MAX_ATTEMPTS": str(attempts)}
            )
            if result.status in ("success", "terminated") or scope.stopped or attempt == attempts:
                break
            wait = delay * factor ** (attempt - 1)
            await self.reporter.log(
                step.name,
                f"\n[outpost] attempt {attempt} of {attempts} failed ({result.message}); "
                f"retrying in {_duration(wait)}\n".encode(),
            )
            if await self._sleep(wait, scope):
                return _StepResult("terminated", message=scope.why)
        return result

    async def _body(self, step: Step, scope: _Scope, extra: dict[str, str]) -> _StepResult:
        if step.type == "freestyle":
            return await self._run_commands(step, scope, step.commands, step.environment, extra)
        if step.type == "git-clone":
            return await self._git_clone(step, scope)
        if step.type in self.executor.step_types:
            return await self._container_step(step, scope)
        return _StepResult(
            "error",
            message=f"step type {step.type!r} is not supported by this runner's executor ({self.executor.name})",
        )

    # --- container steps (build, push, composition) ------------------------------------------------

    async def _container_step(self, step: Step, scope: _Scope) -> _StepResult:
        masker = Masker(self._masked)

        async def output(chunk: bytes) -> None:
            if shown := masker.feed(chunk):
                await self.reporter.log(step.name, shown)

        values = self._scope_vars()
        runs = {"build": self._build_step, "push": self._push_step, "composition": self._composition_step}
        try:
            return await self._race(step, scope, runs[step.type](step, values, output))
        except ExecutorError as exc:
            await output(f"[outpost] {exc}\n".encode())
            return _StepResult("error", message=str(exc))
        finally:
            if rest := masker.flush():
                await self.reporter.log(step.name, rest)

    async def _race(self, step: Step, scope: _Scope, work: Awaitable[_StepResult]) -> _StepResult:
        """Runs `work` until it ends, the step times out or its scope is stopped."""
        task = asyncio.ensure_future(work)
        stops = [asyncio.create_task(e.wait()) for e in scope.events()]
        try:
            done, _ = await asyncio.wait({task, *stops}, timeout=step.timeout, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ExecutorError):
                await task
            raise
        finally:
            for s in stops:
                s.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ExecutorError):
            await task
        if scope.stopped:
            return _StepResult("terminated", message=scope.why)
        return _StepResult("failure", message=f"step timed out after {_duration(step.timeout or 0)}")

    async def _build_step(self, step: Step, values: dict[str, str], output: Output) -> _StepResult:
        registries = self.registries
        plan = containersteps.build_plan(step, values, context=self._workdir(step, values), auths=registries.all())
        if plan.ignored:
            await output(f"[outpost] not used by this runner's builder: {', '.join(plan.ignored)}\n".encode())
        await output(f"[outpost] building {', '.join(plan.job.tags)} in {plan.job.context.name or '/'}\n".encode())
        built = await self.executor.build_image(plan.job, output)
        await output(f"[outpost] built {built.image_id} ({built.builder})\n".encode())
        prefix = f"steps.{step.name}."
        self.members.update(
            {
                step.name: built.reference,
                prefix + "imageId": built.image_id,
                prefix + "imageName": plan.image_name,
                prefix + "imageTagName": plan.tags[0],
            }
        )
        self._built[built.reference] = self._built[built.image_id] = plan.image_name
        if not plan.push:
            return _StepResult("success", exit_code=0)
        named = substitute(str(step.fields.get("registry") or ""), values).strip()
        default = registries.get(named) if named else registries.default()
        if default is None:
            await output(b"[outpost] no default registry integration: the image stays on the runner\n")
            return _StepResult("success", exit_code=0)
        try:
            targets = images.push_targets(plan.image_name, plan.tags, default)
        except ValueError as exc:
            raise ExecutorError(f"cannot push {plan.image_name!r}: {exc}") from None
        digest = await self.executor.push_image(PushJob(step.name, built.reference, targets, default), output)
        self.members[prefix + "imageRepoDigest"] = digest
        await output(f"[outpost] pushed to {default.name or default.domain}: {digest}\n".encode())
        return _StepResult("success", exit_code=0)

    async def _push_step(self, step: Step, values: dict[str, str], output: Output) -> _StepResult:
        registries = self.registries
        name = substitute(str(step.fields.get("registry") or ""), values).strip()
        registry = registries.get(name) if name else registries.default()
        if registry is None:
            raise ExecutorError("nowhere to push: name a registry integration in `registry`, or make one the default")
        job, image_name = containersteps.push_job(step, values, registry=registry, built=self._built)
        digest = await self.executor.push_image(job, output)
        prefix = f"steps.{step.name}."
        self.members.update(
            {
                prefix + "registry": registry.name or registry.domain,
                prefix + "imageId": job.image,
                prefix + "imageName": image_name,
                prefix + "imageRepoDigest": digest,
            }
        )
        await output(f"[outpost] pushed {', '.join(job.targets)}: {digest}\n".encode())
        return _StepResult("success", exit_code=0)

    async def _composition_step(self, step: Step, values: dict[str, str], output: Output) -> _StepResult:
        job = containersteps.composition_job(
            step, values, workdir=self._workdir(step, values), volume=self.ctx.volume, auths=self.registries.all()
        )
        code = await self.executor.compose(job, output)
        if code == 0:
            return _StepResult("success", exit_code=0)
        return _StepResult("failure", exit_code=code, message=f"a composition candidate exited with code {code}")

    def _containerize(self, job: StepJob, step: Step, values: Mapping[str, str]) -> None:
        auths = self.registries.all()
        if context := substitute(str(step.fields.get("registry_context") or ""), values).strip():
            chosen = self.registries.get(context)  # the step's choice among integrations of the same domain
            auths = [chosen, *(a for a in auths if a is not chosen)]
        elif job.image:
            self.registries.for_image(job.image)  # a registry this runner cannot use says so, not a bare 401
        containersteps.containerize(
            job, step, values, volume=self.ctx.volume, auths=auths, root_services=self._services
        )

    async def _git_clone(self, step: Step, scope: _Scope) -> _StepResult:
        """Clones on the runner, next to the Git server; the control plane never sees the repository."""
        values = self._scope_vars()

        def text(name: str) -> str | None:
            value = step.fields.get(name)
            return substitute(str(value), values).strip() or None if value is not None else None

        repo = text("repo") or ""
        credentials = step.fields.get("credentials") if isinstance(step.fields.get("credentials"), dict) else {}
        username = substitute(str(credentials.get("username") or ""), values) or None if credentials else None
        password = substitute(str(credentials.get("password") or ""), values) or None if credentials else None
        try:
            repo, username, password = self._through_integration(text("git"), repo, username, password)
        except gitaccess.AccessError as exc:
            await self.reporter.log(step.name, f"[outpost] {exc}\n".encode())
            return _StepResult("failure", message=str(exc))
        if password:
            self._masked.add(password)
        try:
            folder = gitclone.repo_dir_name(repo)
        except ValueError as exc:
            return _StepResult("error", message=str(exc))
        parent = self._workdir(step, values) if step.working_directory else self.ctx.volume
        depth = text("depth")
        request = gitclone.CloneRequest(
            repo=repo,
            target=parent / folder,
            revision=text("revision"),
            username=username,
            password=password,
            depth=int(depth) if depth and depth.isdigit() and int(depth) > 0 else None,
            exclude_blobs=self._truthy(step.fields.get("exclude_blobs"), default=False),
            use_proxy=self._truthy(step.fields.get("use_proxy"), default=False),
            env={k: os.environ[k] for k in PASSED_THROUGH if k in os.environ},
            skip_tags_on_update=self._truthy(step.fields.get("skip_tags_on_update"), default=False),
        )
        masker = Masker(self._masked)

        async def output(chunk: bytes) -> None:
            if shown := masker.feed(chunk):
                await self.reporter.log(step.name, shown)

        stop = asyncio.Event()
        clone = asyncio.create_task(gitclone.clone(request, output, cancel=stop))
        stops = [asyncio.create_task(e.wait()) for e in scope.events()]
        try:
            done, _ = await asyncio.wait({clone, *stops}, timeout=step.timeout, return_when="FIRST_COMPLETED")
            if clone not in done:
                stop.set()
                await clone
        finally:
            for s in stops:
                s.cancel()
            if rest := masker.flush():
                await self.reporter.log(step.name, rest)
        result = clone.result()
        if clone not in done and not scope.stopped:
            return _StepResult("failure", message=f"step timed out after {_duration(step.timeout or 0)}")
        if result.status == "terminated":
            return _StepResult("terminated", message=scope.why or result.message)
        if result.status != "success":
            return _StepResult("failure", exit_code=result.exit_code, message=result.message)
        self.variables.update(result.variables)
        checkout = result.workdir or request.target
        self.members.update(
            {
                step.name: str(checkout),
                f"steps.{step.name}.revision": result.variables.get("CF_REVISION", ""),
                f"steps.{step.name}.repo": repo,
            }
        )
        if step.name == "main_clone":
            self._main_clone = checkout
        return _StepResult("success", exit_code=0)

    def _through_integration(
        self, git: str | None, repo: str, username: str | None, password: str | None
    ) -> tuple[str, str | None, str | None]:
        """The clone URL and credentials of a git-clone step: `owner/name` and steps naming `git` go through a git
        integration (the named one, or the default); the step's own `credentials` win over the integration's."""
        if not git and not gitaccess.is_owner_name(repo):
            return repo, username, password
        access = gitaccess.choose(self.ctx.integrations, git)
        url = gitaccess.clone_url(access, repo)
        if username or password:
            return url, username, password
        user, secret = gitaccess.credentials(access, self.ctx.runner_secrets)
        return url, user, secret

    async def _approval(self, step: Step, scope: _Scope) -> _StepResult:
        spec = step.fields.get("timeout") if isinstance(step.fields.get("timeout"), dict) else {}
        hours = float(spec.get("duration", APPROVAL_DEFAULT_HOURS)) if spec else APPROVAL_DEFAULT_HOURS
        wait = hours * _UNITS.get(str(spec.get("timeUnit", "hours")) if spec else "hours", 3600.0)
        final_state = str(spec.get("finalState", "denied")) if spec else "denied"
        self.states[step.name] = "pending-approval"
        self.workflow = "pending-approval"
        await self.reporter.step(step.name, StepUpdate(status="pending-approval", title=step.title))
        await self.reporter.log(
            step.name,
            f"[outpost] waiting for approval (at most {_duration(wait)}, then {final_state}): "
            f"outpost build approve {self.ctx.build_id} {step.name}\n".encode(),
        )
        decision = self._decision(step.name)
        stop: list[asyncio.Future[Any]] = [asyncio.ensure_future(e.wait()) for e in scope.events()]
        try:
            await asyncio.wait([decision, *stop], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for s in stop:
                s.cancel()
        self.workflow = "running"
        if decision.done():
            answer, by = decision.result()
            who = f" by {by}" if by else ""
            await self.reporter.log(step.name, f"[outpost] {answer}{who}\n".encode())
            return _StepResult("approved" if answer == "approved" else "denied", message=f"{answer}{who}")
        if scope.stopped:
            return _StepResult("terminated", message=scope.why)
        message = f"no answer within {_duration(wait)}: {final_state}"
        if final_state == "terminated":
            self.cancel(f"step {step.name}: {message}")
            return _StepResult("terminated", message=message)
        return _StepResult("approved" if final_state == "approved" else "denied", message=message)

    async def _skip(self, step: Step, reason: str) -> None:
        self._record(step, "skipped")
        await self.reporter.step(step.name, StepUpdate(status="skipped", title=step.title, message=reason))
        for child in step.steps:
            await self._skip(child, reason)

    def _record(self, step: Step, state: str) -> None:
        self.states[step.name] = state
        prefix = f"steps.{step.name}."
        self.members.update(
            {
                prefix + "name": step.name,
                prefix + "type": step.type,
                prefix + "description": step.description or "",
                prefix + "result": state,
                prefix + "workingDirectory": str(self._workdir(step, self._scope_vars())),
            }
        )

    # --- conditions --------------------------------------------------------------------------------

    def _when(self, step: Step, *, final: bool) -> str | None:
        """None when the step may run; "wait" (only when not final); else why it is skipped."""
        if step.when is None:
            return None
        return self._evaluate(step.when, final=final)

    def _evaluate(self, when: Mapping[str, Any], *, final: bool) -> str | None:
        scope_vars = self._scope_vars()
        result = evaluate_when(
            when,
            branch=self.variables.get("CF_BRANCH") or self.ctx.branch,
            substitute=lambda text: substitute(text, scope_vars),
            lookup=self._lookup,
            step_state=self.states.get,
            final=final,
        )
        if result.verdict == "run":
            return None
        if result.verdict == "wait":
            return "wait"
        return result.reason

    def _lookup(self, name: str) -> object:
        """An identifier in a condition: `workflow.result`, `steps.X.<member>` or a variable."""
        if name == "workflow.result":
            return self.workflow
        if name.startswith("steps.") and name.count(".") >= 2:
            step, member = name[len("steps.") :].rsplit(".", 1)
            if member == "result" and step in self.states:
                return self.states[step]
        scope_vars = self._scope_vars()
        if name in scope_vars:
            return scope_vars[name]
        raise KeyError(name)

    def _scope_vars(self) -> dict[str, str]:
        """What `${{...}}` sees: variables, then step members and `workflow.result`."""
        return {**self.members, "workflow.result": self.workflow, **self.variables}

    # --- hooks -------------------------------------------------------------------------------------

    async def _hook(self, name: str, hook: Any, stream: str, scope: _Scope | None = None) -> bool:
        """Runs a hook's `exec` commands or its `steps`, in the stream given. True if it succeeded
        or its failure is tolerated (`fail_fast: false`)."""
        scope = scope or self._root
        if not isinstance(hook, dict):
            return True
        tolerant = not self._truthy(hook.get("fail_fast"), default=True)
        jobs: list[tuple[str, list[str], list[str], str | None]] = []
        spec = hook.get("exec")
        if isinstance(spec, list):
            jobs.append((name, [str(c) for c in spec], [], None))
        elif isinstance(spec, dict):
            env = [str(e) for e in spec.get("environment") or []]
            jobs.append((name, [str(c) for c in spec.get("commands") or []], env, spec.get("image")))
        for sub, fields in (hook.get("steps") or {}).items():
            if isinstance(fields, dict):
                env = [str(e) for e in fields.get("environment") or []]
                jobs.append((f"{name}/{sub}", [str(c) for c in fields.get("commands") or []], env, fields.get("image")))
        ok = True
        for label, commands, env, image in jobs:
            await self.reporter.log(stream, f"[outpost] hook {label}: running\n".encode())
            fake = Step(
                name=stream, type="freestyle", fields={"image": image} if image else {}, location=Location(0, 0)
            )
            result = await self._run_commands(fake, scope, commands, env, {}, stream=stream)
            await self.reporter.log(stream, f"[outpost] hook {label}: {result.status}\n".encode())
            if result.status != "success":
                ok = False
                break
        return ok or tolerant

    # --- running commands --------------------------------------------------------------------------

    async def _run_commands(
        self,
        step: Step,
        scope: _Scope,
        commands: list[str],
        environment: list[str],
        extra: dict[str, str],
        *,
        stream: str | None = None,
    ) -> _StepResult:
        stream = stream or step.name
        try:
            job = self._job(step, commands, environment, extra)
        except ExecutorError as exc:  # e.g. a volume leaving the build volume, a registry this runner lacks
            await self.reporter.log(stream, f"[outpost] {exc}\n".encode())
            return _StepResult("error", message=str(exc))
        if not self._noticed and (notice := self.executor.notice(job)):
            self._noticed = True
            await self._system(notice + "\n")

        masker = Masker(self._masked)

        async def output(chunk: bytes) -> None:
            if shown := masker.feed(chunk):
                await self.reporter.log(stream, shown)

        try:
            return await self._watch(step, job, output, scope)
        finally:
            if rest := masker.flush():
                await self.reporter.log(stream, rest)

    async def _watch(self, step: Step, job: StepJob, output: Output, scope: _Scope) -> _StepResult:
        """Runs the job until it ends, times out or its scope is stopped (cancel, fail-fast)."""
        run = asyncio.create_task(self.executor.run(job, output))
        stops = [asyncio.create_task(e.wait()) for e in scope.events()]
        try:
            done, _ = await asyncio.wait({run, *stops}, timeout=step.timeout, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            run.cancel()  # the executor kills the step's processes before this await returns
            with contextlib.suppress(asyncio.CancelledError, ExecutorError):
                await run
            raise
        finally:
            for s in stops:
                s.cancel()
        if run not in done:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, ExecutorError):
                await run
            if scope.stopped:
                return _StepResult("terminated", message=scope.why)
            return _StepResult("failure", message=f"step timed out after {_duration(step.timeout or 0)}")
        try:
            code = run.result()
        except ExecutorError as exc:
            return _StepResult("error", message=str(exc))
        self._collect_exports()
        if code == 0:
            return _StepResult("success", exit_code=0)
        return _StepResult("failure", exit_code=code, message=f"exited with code {code}")

    async def _sleep(self, seconds: float, scope: _Scope) -> bool:
        """Waits; True if the scope was stopped meanwhile."""
        stops = [asyncio.create_task(e.wait()) for e in scope.events()]
        try:
            await asyncio.wait(stops, timeout=seconds)
        finally:
            for s in stops:
                s.cancel()
        return scope.stopped

    def _job(self, step: Step, commands: list[str], environment: list[str], extra: dict[str, str]) -> StepJob:
        variables = {**self.variables, **extra, "CF_STEP_NAME": step.name}
        scope_vars = {**self._scope_vars(), **variables}
        host = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env = {**host, **variables}
        for entry in environment:
            key, _, value = substitute(entry, scope_vars).partition("=")
            env[key] = value
            host.pop(key, None)
        job = StepJob(
            step=step.name,
            script="set -e\n" + "\n".join(substitute(c, scope_vars) for c in commands) + "\n",
            env=env,
            workdir=self._workdir(step, scope_vars),
            shell=step.shell,
            image=substitute(step.image, scope_vars) if step.image else None,
            extra_path=[self.ctx.scratch / "bin"],
            host_env=frozenset(k for k in host if k not in variables),
        )
        if self.executor.step_types:  # a container executor: what only containers have
            self._containerize(job, step, scope_vars)
        return job

    def _workdir(self, step: Step, variables: Mapping[str, str]) -> Path:
        raw = substitute(step.working_directory or "", variables).strip()
        volume = self.ctx.volume
        base = self._main_clone or volume  # a `main_clone` checkout is where later steps start
        if not raw or raw in (".", "./"):
            return base
        if raw == VOLUME_ALIAS or raw.startswith(VOLUME_ALIAS + "/"):
            return volume / raw[len(VOLUME_ALIAS) :].lstrip("/")
        path = Path(raw)
        return path if path.is_absolute() else base / path

    def _collect_exports(self) -> None:
        volume = self.ctx.volume
        with contextlib.suppress(FileNotFoundError):
            self.variables.update(parse_export_file((volume / EXPORT_FILE).read_text(errors="replace")))
        with contextlib.suppress(FileNotFoundError):
            names = (volume / cfexport.MASK_FILE).read_text(errors="replace").split()
            self._masked.update(self.variables[n] for n in names if n in self.variables)

    def _truthy(self, value: Any, *, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        resolved = substitute(str(value), self.variables).strip().lower()
        if resolved in ("true", "false"):
            return resolved == "true"
        return default

    async def _system(self, text: str) -> None:
        masker = Masker(self._masked)
        shown = masker.feed(f"[outpost] {text}".encode()) + masker.flush()
        await self.reporter.log(SYSTEM_STREAM, shown)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
