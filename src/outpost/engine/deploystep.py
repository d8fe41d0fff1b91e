"""The `deploy` step (`kind: kubernetes`): run by the runner process itself through the cluster's API, whatever the
executor, with the step's fields (variables substituted) handed to the deploy room: `service` + `candidate` to
`deploy.service`, `file_path` (read from the build volume) to `deploy.manifests`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from outpost.containers.registries import Registries
from outpost.deploy import clusters, manifests
from outpost.deploy.clusters import ClusterError
from outpost.deploy.service import ServiceUpdate
from outpost.engine.reporting import Reporter, masked_log
from outpost.engine.results import StepResult
from outpost.engine.scopes import Scope, race
from outpost.engine.state import VOLUME_ALIAS, BuildState
from outpost.errors import ExecutorError
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import substitute
from outpost.wire import ClusterAccess

DEFAULT_TIMEOUT = 120.0  # seconds a rollout may take (the spec's default `timeout: '120'`)


class DeploySteps:
    """Runs the deploy steps of one build against the clusters it was given."""

    def __init__(
        self,
        reporter: Reporter,
        state: BuildState,
        registries: Registries,
        cluster_access: Mapping[str, ClusterAccess],
        runner_secrets: Mapping[str, str],
    ) -> None:
        self.reporter = reporter
        self.state = state
        self.registries = registries
        self.clusters = cluster_access
        self.runner_secrets = runner_secrets

    async def run(self, step: Step, scope: Scope) -> StepResult:
        async with masked_log(self.reporter, step.name, self.state.masked) as output:

            async def say(line: str) -> None:
                await output(f"{line}\n".encode())

            try:
                return await race(step, scope, self._deploy(step, say))
            except ExecutorError as exc:
                await say(f"[outpost] {exc}")
                return StepResult("error", message=str(exc))

    async def _deploy(self, step: Step, say: manifests.Say) -> StepResult:
        from lightkube import ApiError

        values = self.state.scope_vars()

        def text(name: str) -> str:
            value = step.fields.get(name)
            return substitute(str(value), values).strip() if value is not None else ""

        access = clusters.pick(self.clusters, text("cluster"))
        namespace = text("namespace") or access.namespace
        try:
            timeout = float(text("timeout") or DEFAULT_TIMEOUT)
        except ValueError:
            raise ClusterError(f"`timeout` is not a number of seconds: {text('timeout')!r}") from None
        try:
            async with clusters.client(access, self.runner_secrets, namespace) as api:
                if step.fields.get("service"):
                    return await self._service(step, api, text("service"), namespace, timeout, say)
                objects = manifests.documents(self._manifest(text("file_path"), values), text("file_path"))
                failed = await manifests.apply(api, objects, namespace, timeout, say)
        except ApiError as exc:
            raise ClusterError(f"cluster {access.name!r} answered {exc.status.code}: {exc.status.message}") from None
        except OSError as exc:  # httpx's transport errors are OSErrors underneath; ssl errors too
            raise ClusterError(f"cannot reach cluster {access.name!r} at {access.server}: {exc}") from None
        except Exception as exc:  # lightkube's client raises its HTTP library's errors, not ours
            if type(exc).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
                raise
            raise ClusterError(f"cannot reach cluster {access.name!r} at {access.server}: {exc}") from None
        if failed:
            return StepResult("failure", message="; ".join(failed))
        return StepResult("success", exit_code=0)

    async def _service(
        self, step: Step, api: object, name: str, namespace: str, within: float, say: manifests.Say
    ) -> StepResult:
        values = self.state.scope_vars()
        candidate = step.fields.get("candidate")
        fields = candidate if isinstance(candidate, dict) else {}
        image = substitute(str(fields.get("image") or ""), values).strip()
        if not image:
            raise ClusterError("a deploy step with `service` needs `candidate.image`: the image to run")
        registry = substitute(str(fields.get("registry") or ""), values).strip()
        auth = self.registries.get(registry) if registry else self.registries.for_image(image)
        outcome = await ServiceUpdate(
            api=api,
            namespace=namespace,
            name=name,
            image=image,
            registry=auth,
            timeout=within,
            rollback_on_failure=self.state.truthy(step.fields.get("rollback_on_failure"), default=False),
            say=say,
        ).run()
        self.state.members[f"steps.{step.name}.revision"] = str(outcome.revision)
        if outcome.ok:
            return StepResult("success", exit_code=0)
        return StepResult("failure", message=outcome.message)

    def _manifest(self, raw: str, values: Mapping[str, str]) -> str:
        """The file's text, `${{VAR}}` substituted; it must be on the build volume."""
        volume = self.state.volume.resolve()
        if raw == VOLUME_ALIAS or raw.startswith(VOLUME_ALIAS + "/"):
            path = volume / raw[len(VOLUME_ALIAS) :].lstrip("/")
        elif Path(raw).is_absolute():
            raise ClusterError(f"`file_path` must be on the build volume ({VOLUME_ALIAS}/...), not {raw}")
        else:
            path = (self.state.main_clone or volume) / raw
        resolved = path.resolve()
        if resolved != volume and volume not in resolved.parents:
            raise ClusterError(f"`file_path` leaves the build volume: {raw}")
        try:
            return substitute(resolved.read_text(), values)
        except (OSError, UnicodeDecodeError) as exc:
            raise ClusterError(
                f"cannot read `file_path` {raw}: {exc.strerror if isinstance(exc, OSError) else exc}"
            ) from None
