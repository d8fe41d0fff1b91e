"""Build volumes kept per pipeline as PersistentVolumeClaims, claimed by one build at a time.

A pipeline's volume is the claim named after it; a build takes it by writing its id into an annotation with an
update conditional on the claim's resourceVersion, so of two builds that read it free at once exactly one gets it
(the other's update is a 409) and the other gets a fresh claim of its own. Releasing is conditional the same way and
only by the holder. (The next slice uses this from the engine pod; the janitor that enforces a retention time and a
per-pipeline cap is not written yet.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import PersistentVolumeClaim

from outpost.errors import ExecutorError
from outpost.executors.kubernetes import objects

HOLDER = "outpost.io/claimed-by"
PIPELINE_LABEL = "outpost.io/pipeline"


@dataclass(frozen=True)
class Claimed:
    name: str
    kept: bool  # the pipeline's own volume (what earlier builds left is there); False: a fresh one


async def claim(
    client: AsyncClient, namespace: str, pipeline: str, build_id: str, *, size: str, storage_class: str | None = None
) -> Claimed:
    """The pipeline's volume if no build holds it, else a fresh claim for this build alone."""
    name = objects.dns_label("vol", pipeline)
    labels = {PIPELINE_LABEL: objects.label_value(pipeline)}
    try:
        current = await client.get(PersistentVolumeClaim, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            raise ExecutorError(f"read the volume of {pipeline}: {exc.status.message}") from exc
        made = objects.build_claim(name, namespace, size=size, storage_class=storage_class, labels=labels)
        _hold(made, build_id)
        try:
            await client.create(made)
            return Claimed(name, kept=True)
        except ApiError as raced:
            if raced.status.code != 409:
                raise ExecutorError(f"create the volume of {pipeline}: {raced.status.message}") from raced
            return await _fresh(client, namespace, pipeline, build_id, size, storage_class, labels)
    if _holder(current) is None:
        _hold(current, build_id)
        try:  # conditional: `current` carries the resourceVersion it was read at
            await client.replace(current)
            return Claimed(name, kept=True)
        except ApiError as exc:
            if exc.status.code != 409:
                raise ExecutorError(f"claim the volume of {pipeline}: {exc.status.message}") from exc
    return await _fresh(client, namespace, pipeline, build_id, size, storage_class, labels)


async def release(client: AsyncClient, namespace: str, name: str, build_id: str) -> bool:
    """Gives the volume back if this build holds it; True when it did."""
    try:
        current = await client.get(PersistentVolumeClaim, name, namespace=namespace)
        if _holder(current) != build_id:
            return False
        assert current.metadata is not None
        (current.metadata.annotations or {}).pop(HOLDER, None)
        await client.replace(current)
        return True
    except ApiError as exc:
        if exc.status.code in (404, 409):  # gone, or changed by someone else meanwhile: not ours to release
            return False
        raise ExecutorError(f"release the volume {name}: {exc.status.message}") from exc


async def _fresh(
    client: AsyncClient,
    namespace: str,
    pipeline: str,
    build_id: str,
    size: str,
    storage_class: str | None,
    labels: dict[str, str],
) -> Claimed:
    name = objects.dns_label("vol", pipeline[:40], uuid.uuid4().hex[:8])
    made = objects.build_claim(name, namespace, size=size, storage_class=storage_class, labels=labels)
    _hold(made, build_id)
    try:
        await client.create(made)
    except ApiError as exc:
        raise ExecutorError(f"create a fresh volume for {pipeline}: {exc.status.message}") from exc
    return Claimed(name, kept=False)


def _holder(found: Any) -> str | None:
    annotations = (found.metadata.annotations if found.metadata else None) or {}
    return annotations.get(HOLDER) or None


def _hold(found: Any, build_id: str) -> None:
    found.metadata.annotations = {**(found.metadata.annotations or {}), HOLDER: build_id}
