"""Running commands (a freestyle step's, a hook's) through the build's executor: the job they make (environment,
working directory, image, and on a container executor what only containers have) and its run."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from outpost.containers.registries import Registries
from outpost.engine import containersteps
from outpost.engine.reporting import Reporter, log_system, masked_log
from outpost.engine.results import StepResult
from outpost.engine.scopes import Scope, race
from outpost.engine.state import BuildState
from outpost.errors import ExecutorError
from outpost.executors.base import Executor, Output, StepJob
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import substitute

# Only these variables of the runner's own environment reach a step: never its tokens.
PASSED_THROUGH = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


class Commands:
    """Runs commands as jobs of one build's executor; says the executor's notice once per build."""

    def __init__(
        self, executor: Executor, reporter: Reporter, state: BuildState, *, scratch: Path, registries: Registries
    ) -> None:
        self.executor = executor
        self.reporter = reporter
        self.state = state
        self.scratch = scratch  # the runner's private folder for this build; its `bin` is on every step's PATH
        self.registries = registries
        self.services: Mapping[str, Any] = {}  # the pipeline's root `services`, once it is parsed
        self.kubeconfig: dict[str, Any] | None = None  # the build's clusters as a kubeconfig, for KUBECONFIG
        self._noticed = False
        self._kube_noticed = False

    async def run(
        self,
        step: Step,
        scope: Scope,
        commands: list[str],
        environment: list[str],
        extra: dict[str, str],
        *,
        stream: str | None = None,
    ) -> StepResult:
        stream = stream or step.name
        try:
            job = self._job(step, commands, environment, extra)
        except ExecutorError as exc:  # e.g. a volume leaving the build volume, a registry this runner lacks
            await self.reporter.log(stream, f"[outpost] {exc}\n".encode())
            return StepResult("error", message=str(exc))
        if not self._noticed and (notice := self.executor.notice(job)):
            self._noticed = True
            await log_system(self.reporter, self.state.masked, notice + "\n")
        if self.kubeconfig and not self.executor.takes_kubeconfig and not self._kube_noticed:
            self._kube_noticed = True
            await log_system(
                self.reporter,
                self.state.masked,
                f"steps on the {self.executor.name} executor get no KUBECONFIG for the build's clusters (not built "
                "yet); deploy steps work\n",
            )
        async with (
            self._kubeconfig_file() as job.kubeconfig,
            masked_log(self.reporter, stream, self.state.masked) as output,
        ):
            return await self._watch(step, job, output, scope)

    @contextlib.asynccontextmanager
    async def _kubeconfig_file(self) -> AsyncIterator[Path | None]:
        """The build's kubeconfig in a folder of the step's own under the runner's scratch folder (never the build
        volume), readable by the runner's user only, removed when the step ends."""
        if not self.kubeconfig or not self.executor.takes_kubeconfig:
            yield None
            return
        self.scratch.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="step-", dir=self.scratch))  # 0700
        try:
            path = folder / "kubeconfig"
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                yaml.safe_dump(self.kubeconfig, f)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _watch(self, step: Step, job: StepJob, output: Output, scope: Scope) -> StepResult:
        """Runs the job until it ends, times out or its scope is stopped (cancel, fail-fast)."""
        try:
            code = await race(step, scope, self.executor.run(job, output), self.executor.paused)
        except ExecutorError as exc:
            return StepResult("error", message=str(exc))
        if isinstance(code, StepResult):  # stopped or timed out
            return code
        self.state.collect_exports()
        if code == 0:
            return StepResult("success", exit_code=0)
        return StepResult("failure", exit_code=code, message=f"exited with code {code}")

    def _job(self, step: Step, commands: list[str], environment: list[str], extra: dict[str, str]) -> StepJob:
        variables = {**self.state.variables, **extra, "CF_STEP_NAME": step.name}
        scope_vars = {**self.state.scope_vars(), **variables}
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
            workdir=self.state.workdir(step, scope_vars),
            shell=step.shell,
            image=substitute(step.image, scope_vars) if step.image else None,
            extra_path=[self.scratch / "bin"],
            host_env=frozenset(k for k in host if k not in variables),
        )
        if self.executor.step_types:  # a container executor: what only containers have
            self._containerize(job, step, scope_vars)
        return job

    def _containerize(self, job: StepJob, step: Step, values: Mapping[str, str]) -> None:
        auths = self.registries.all()
        if context := substitute(str(step.fields.get("registry_context") or ""), values).strip():
            chosen = self.registries.get(context)  # the step's choice among integrations of the same domain
            auths = [chosen, *(a for a in auths if a is not chosen)]
        elif job.image:
            self.registries.for_image(job.image)  # a registry this runner cannot use says so, not a bare 401
        containersteps.containerize(
            job, step, values, volume=self.state.volume, auths=auths, root_services=self.services
        )
