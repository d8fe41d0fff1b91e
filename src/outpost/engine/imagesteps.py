"""The `build`, `push` and `composition` steps as a build runs them on a container executor (`containersteps`
makes their jobs); the images a build step made are remembered for later pushes."""

from __future__ import annotations

from outpost.containers import images
from outpost.containers.registries import Registries
from outpost.engine import containersteps
from outpost.engine.reporting import Reporter, masked_log
from outpost.engine.results import StepResult
from outpost.engine.scopes import Scope, race
from outpost.engine.state import BuildState
from outpost.errors import ExecutorError
from outpost.executors.base import Executor, Output, PushJob
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import substitute


class ImageSteps:
    """Runs the image steps of one build."""

    def __init__(self, executor: Executor, reporter: Reporter, state: BuildState, registries: Registries) -> None:
        self.executor = executor
        self.reporter = reporter
        self.state = state
        self.registries = registries
        self._built: dict[str, str] = {}  # a build step's image reference and id -> its image name

    async def run(self, step: Step, scope: Scope) -> StepResult:
        async with masked_log(self.reporter, step.name, self.state.masked) as output:
            values = self.state.scope_vars()
            runs = {"build": self._build, "push": self._push, "composition": self._composition}
            try:
                return await race(step, scope, runs[step.type](step, values, output), self.executor.paused)
            except ExecutorError as exc:
                await output(f"[outpost] {exc}\n".encode())
                return StepResult("error", message=str(exc))

    async def _build(self, step: Step, values: dict[str, str], output: Output) -> StepResult:
        registries = self.registries
        context = self.state.workdir(step, values)
        plan = containersteps.build_plan(step, values, context=context, auths=registries.all())
        if plan.ignored:
            await output(f"[outpost] not used by this runner's builder: {', '.join(plan.ignored)}\n".encode())
        await output(f"[outpost] building {', '.join(plan.job.tags)} in {plan.job.context.name or '/'}\n".encode())
        built = await self.executor.build_image(plan.job, output)
        await output(f"[outpost] built {built.image_id} ({built.builder})\n".encode())
        prefix = f"steps.{step.name}."
        self.state.members.update(
            {
                step.name: built.reference,
                prefix + "imageId": built.image_id,
                prefix + "imageName": plan.image_name,
                prefix + "imageTagName": plan.tags[0],
            }
        )
        self._built[built.reference] = self._built[built.image_id] = plan.image_name
        if not plan.push:
            return StepResult("success", exit_code=0)
        named = substitute(str(step.fields.get("registry") or ""), values).strip()
        default = registries.get(named) if named else registries.default()
        if default is None:
            await output(b"[outpost] no default registry integration: the image stays on the runner\n")
            return StepResult("success", exit_code=0)
        try:
            targets = images.push_targets(plan.image_name, plan.tags, default)
        except ValueError as exc:
            raise ExecutorError(f"cannot push {plan.image_name!r}: {exc}") from None
        digest = await self.executor.push_image(PushJob(step.name, built.reference, targets, default), output)
        self.state.members[prefix + "imageRepoDigest"] = digest
        await output(f"[outpost] pushed to {default.name or default.domain}: {digest}\n".encode())
        return StepResult("success", exit_code=0)

    async def _push(self, step: Step, values: dict[str, str], output: Output) -> StepResult:
        registries = self.registries
        name = substitute(str(step.fields.get("registry") or ""), values).strip()
        registry = registries.get(name) if name else registries.default()
        if registry is None:
            raise ExecutorError("nowhere to push: name a registry integration in `registry`, or make one the default")
        job, image_name = containersteps.push_job(step, values, registry=registry, built=self._built)
        digest = await self.executor.push_image(job, output)
        prefix = f"steps.{step.name}."
        self.state.members.update(
            {
                prefix + "registry": registry.name or registry.domain,
                prefix + "imageId": job.image,
                prefix + "imageName": image_name,
                prefix + "imageRepoDigest": digest,
            }
        )
        await output(f"[outpost] pushed {', '.join(job.targets)}: {digest}\n".encode())
        return StepResult("success", exit_code=0)

    async def _composition(self, step: Step, values: dict[str, str], output: Output) -> StepResult:
        workdir = self.state.workdir(step, values)
        auths = self.registries.all()
        job = containersteps.composition_job(step, values, workdir=workdir, volume=self.state.volume, auths=auths)
        for warning in job.warnings:
            await output(f"[outpost] {warning}\n".encode())
        code = await self.executor.compose(job, output)
        if code == 0:
            return StepResult("success", exit_code=0)
        return StepResult("failure", exit_code=code, message=f"a composition candidate exited with code {code}")
