"""`deploy` with `file_path`: every document of the file (variables already substituted) applied server-side, as
`kubectl apply --server-side` does, each reported as created, configured or unchanged; the Deployments among them
are then watched until their rollout is done."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from outpost.deploy import rollout
from outpost.deploy.clusters import FIELD_MANAGER, ClusterError

Say = Callable[[str], Awaitable[None]]


def documents(text: str, file: str) -> list[dict[str, Any]]:
    """The objects of a manifest file; ClusterError naming the document (and line) of a problem."""
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"{file}:{where.line + 1}:{where.column + 1}" if where is not None else file
        raise ClusterError(f"{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    found = []
    for index, doc in enumerate(loaded, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise ClusterError(f"{file}: document {index} is not a Kubernetes object (apiVersion and kind)")
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise ClusterError(f"{file}: document {index} ({doc['kind']}) has no metadata.name")
        found.append(doc)
    if not found:
        raise ClusterError(f"{file}: no Kubernetes object in the file")
    return found


async def apply(api: Any, objects: list[dict[str, Any]], namespace: str, within: float, say: Say) -> list[str]:
    """Applies each object (in `namespace` unless it names its own) and waits for the Deployments' rollouts;
    returns what failed (empty: all went well). `within`: seconds for it all."""
    from lightkube import ApiError
    from lightkube.codecs import from_dict
    from lightkube.core.exceptions import LoadResourceError
    from lightkube.core.resource import NamespacedResource

    deadline = time.monotonic() + within  # seconds for the whole step
    rollouts = []
    for doc in objects:
        kind, name = doc["kind"], doc["metadata"]["name"]
        try:
            obj = from_dict(doc)
        except LoadResourceError as exc:
            raise ClusterError(f"{kind} {name}: {exc}") from None
        ns = (doc["metadata"].get("namespace") or namespace) if isinstance(obj, NamespacedResource) else None
        try:
            before = await api.get(type(obj), name, namespace=ns)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            before = None
        after = await api.apply(obj, namespace=ns, field_manager=FIELD_MANAGER, force=True)
        if before is None:
            verb = "created"
        elif before.metadata.resourceVersion == after.metadata.resourceVersion:
            verb = "unchanged"
        else:
            verb = "configured"
        group = doc["apiVersion"].rpartition("/")[0]
        await say(f"{kind.lower()}{'.' + group if group else ''}/{name} {verb}")
        if kind == "Deployment" and doc["apiVersion"] == "apps/v1":
            rollouts.append((name, ns))
    failed = []
    for name, ns in rollouts:
        from lightkube.resources.apps_v1 import Deployment

        async def get(name: str = name, ns: str | None = ns) -> dict[str, Any]:
            return dict((await api.get(Deployment, name, namespace=ns)).to_dict())

        state, found = await rollout.watch(get, deadline, say)
        if state.done:
            await say(f'deployment "{name}" rolled out: revision {rollout.revision(found)}')
        else:
            for line in rollout.describe(found):
                await say(line)
            failed.append(f"deployment {name!r}: {state.message}")
    return failed
