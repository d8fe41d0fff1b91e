"""`deploy` with `service` and `candidate`: the Deployment's containers get the candidate image (and the pull secret
its registry needs), the step waits for the rollout and says the revision; a failed rollout is told with the
Deployment's conditions and the last warnings of its new pods, and with `rollback_on_failure` undone."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from outpost.containers.auth import RegistryAuth
from outpost.containers.images import domain_of
from outpost.deploy import pullsecrets, rollout
from outpost.deploy.clusters import ClusterError

Say = Callable[[str], Awaitable[None]]
LAST_EVENTS = 5  # warnings of the new pods shown when a rollout fails


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    revision: int = 0


@dataclass
class ServiceUpdate:
    """One `deploy` of a service: `api` is the integration's lightkube AsyncClient, acting in `namespace`."""

    api: Any
    namespace: str
    name: str
    image: str
    registry: RegistryAuth | None  # the candidate's registry integration, for its pull secret
    timeout: float
    rollback_on_failure: bool
    say: Say

    async def run(self) -> Outcome:
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.types import PatchType

        current = await self._deployment()
        pull_secret = await self._pull_secret(current) if self.registry is not None else None
        ops = rollout.image_patch(current, self.image, pull_secret)
        before = rollout.revision(current)
        await self.say(f'deployment "{self.name}" in namespace "{self.namespace}": image {self.image}')
        await self.api.patch(Deployment, self.name, ops, namespace=self.namespace, patch_type=PatchType.JSON)
        deadline = time.monotonic() + self.timeout
        state, found = await rollout.watch(self._deployment, deadline, self.say)
        now = rollout.revision(found)
        if state.done:
            same = " (unchanged: it already ran this image)" if now == before else ""
            await self.say(f'deployment "{self.name}" rolled out: revision {now}{same}')
            return Outcome(True, f"revision {now}", now)
        await self._explain(found, state)
        if not self.rollback_on_failure:
            return Outcome(False, f"the rollout of deployment {self.name!r} failed: {state.message}", now)
        return await self._rollback(found, state)

    async def _deployment(self) -> dict[str, Any]:
        from lightkube.resources.apps_v1 import Deployment

        found = await self.api.get(Deployment, self.name, namespace=self.namespace)
        return dict(found.to_dict())

    async def _replicasets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        from lightkube.resources.apps_v1 import ReplicaSet

        labels = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
        found = [rs.to_dict() async for rs in self.api.list(ReplicaSet, namespace=self.namespace, labels=labels)]
        return rollout.owned(found, deployment)

    async def _pull_secret(self, deployment: dict[str, Any]) -> str | None:
        """The secret the pod template should reference for the candidate's registry: one it already references
        that covers it (then nothing to add), else ours, created if the namespace lacks it."""
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Secret

        assert self.registry is not None
        domain = domain_of(self.image)
        spec = deployment["spec"]["template"]["spec"]
        for ref in spec.get("imagePullSecrets") or []:
            try:
                found = await self.api.get(Secret, ref.get("name", ""), namespace=self.namespace)
            except ApiError:
                continue
            if pullsecrets.covers(found.to_dict(), domain):
                return None
        wanted = pullsecrets.secret(self.registry, self.image, self.namespace)
        name = str(wanted["metadata"]["name"])
        try:
            await self.api.get(Secret, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            await self.api.create(Secret.from_dict(wanted), namespace=self.namespace)
            registry = self.registry.name or self.registry.domain
            await self.say(f'created pull secret "{name}" for registry {registry} in namespace "{self.namespace}"')
        return name

    async def _explain(self, deployment: dict[str, Any], state: rollout.RolloutState) -> None:
        """The Deployment's own conditions and the last warnings of the new ReplicaSet's pods."""
        from lightkube.resources.core_v1 import Event, Pod

        await self.say(f"the rollout failed: {state.message}; the deployment's conditions:")
        for line in rollout.describe(deployment):
            await self.say(line)
        sets = await self._replicasets(deployment)
        newest = [rs for rs in sets if rollout.revision(rs) == rollout.revision(deployment)]
        if not newest:
            return
        template_hash = newest[0]["metadata"].get("labels", {}).get(rollout.HASH, "")
        pods = [p.to_dict() async for p in self.api.list(Pod, namespace=self.namespace,
                                                         labels={rollout.HASH: template_hash})]  # fmt: skip
        names = {p["metadata"]["name"] for p in pods}
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting")
                if waiting:
                    await self.say(
                        f"  pod {pod['metadata']['name']}: {waiting.get('reason')}: {waiting.get('message', '')}"
                    )
        events = [e.to_dict() async for e in self.api.list(Event, namespace=self.namespace, fields={"type": "Warning"})]
        mine = [e for e in events if (e.get("involvedObject") or {}).get("name") in names]
        if mine:
            await self.say("the last warnings of its pods:")
        for event in mine[-LAST_EVENTS:]:
            pod = event["involvedObject"]["name"]
            await self.say(f"  {pod}: {event.get('reason')}: {event.get('message')}")

    async def _rollback(self, deployment: dict[str, Any], state: rollout.RolloutState) -> Outcome:
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.types import PatchType

        failed = rollout.revision(deployment)
        ops, previous = rollout.rollback_patch(deployment, await self._replicasets(deployment))
        await self.say(f"rollback_on_failure: rolling back to the template of revision {previous}")
        await self.api.patch(Deployment, self.name, ops, namespace=self.namespace, patch_type=PatchType.JSON)
        back, found = await rollout.watch(self._deployment, time.monotonic() + self.timeout, self.say)
        now = rollout.revision(found)
        if not back.done:
            raise ClusterError(f"the rollback of deployment {self.name!r} did not finish either: {back.message}")
        await self.say(f'deployment "{self.name}" rolled back: revision {now} runs the template of revision {previous}')
        return Outcome(
            False,
            f"the rollout of deployment {self.name!r} (revision {failed}) failed: {state.message}; rolled back to the "
            f"template of revision {previous} (now revision {now})",
            now,
        )
