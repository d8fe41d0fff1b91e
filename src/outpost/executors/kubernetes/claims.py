"""Build volumes kept per pipeline (or per pipeline and branch) as PersistentVolumeClaims, claimed by one build at a
time (`--volume-reuse pipeline|branch` with engine pods).

A pipeline's volume is the claim named after it (a readable part and a digest, so long branch names stay a DNS
label); a build takes it by writing its id into an annotation with an update conditional on the claim's
resourceVersion, so of two builds that read it free at once exactly one gets it (the other's update is a 409) and
the other gets a fresh claim of its own, deleted when that build ends. Releasing is conditional the same way and
only by the holder, and notes when the volume was last used, for the janitor (`janitor.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import PersistentVolumeClaim

from outpost.errors import ExecutorError
from outpost.executors.kubernetes import objects

HOLDER = "outpost.io/claimed-by"  # annotation: the build holding the volume
HOLDER_RUNNER = "outpost.io/claimed-by-runner"  # annotation: that build's runner (its mark)
LAST_USED = "outpost.io/last-used"  # annotation: when a build last gave it back (or made it), ISO 8601 UTC
VOLUME_OF = "outpost.io/volume-of"  # annotation: account/pipeline[@branch], for people reading the claim
PIPELINE_LABEL = "outpost.io/pipeline"  # a digest of account and pipeline: the janitor's cap counts per value
KIND_LABEL = "outpost.io/volume"  # "kept" (a pipeline's or branch's) or "fresh" (one build's alone)
DEFAULT_SIZE = "10Gi"
HANDOFF_WAIT = 30.0  # seconds a build waits for an ended build of its pipeline to give the volume back
HANDOFF_POLL = 0.2


@dataclass(frozen=True)
class Claimed:
    name: str
    kept: bool  # the pipeline's own volume (what earlier builds left is there); False: a fresh one


def claim_name(account: str, pipeline: str, branch: str | None = None) -> str:
    """The kept volume's claim: `vol-<readable>-<digest>`, a DNS label however long the pipeline or branch name."""
    parts = [account, pipeline] + ([branch] if branch is not None else [])
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9]+", "-", "-".join(p for p in parts[1:] if p).lower()).strip("-")[:46]
    return objects.dns_label("vol", readable, digest)


def pipeline_digest(account: str, pipeline: str) -> str:
    return hashlib.sha256(f"{account}\0{pipeline}".encode()).hexdigest()[:16]


async def claim(
    client: AsyncClient,
    namespace: str,
    pipeline: str,
    build_id: str,
    *,
    account: str = "",
    branch: str | None = None,
    size: str = DEFAULT_SIZE,
    storage_class: str | None = None,
    runner: str | None = None,
    ending: Callable[[str], bool] | None = None,
) -> Claimed:
    """The pipeline's (or pipeline and branch's) volume if no build holds it, else a fresh claim for this build.
    `ending(holder)`: whether the holding build has ended and is about to give the volume back (the builds of a
    pipeline in a row): then it is waited for, at most HANDOFF_WAIT seconds, rather than made afresh for nothing."""
    name = claim_name(account, pipeline, branch)
    labels = {PIPELINE_LABEL: pipeline_digest(account, pipeline)}
    about = f"{account}/{pipeline}" + (f"@{branch}" if branch is not None else "")
    made_by = (namespace, about, build_id, size, storage_class, labels, runner)
    give_up = time.monotonic() + HANDOFF_WAIT
    while True:
        try:
            current = await client.get(PersistentVolumeClaim, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise ExecutorError(f"read the volume of {about}: {exc.status.message}") from exc
            try:
                await client.create(_made(name, "kept", *made_by))
                return Claimed(name, kept=True)
            except ApiError as raced:
                if raced.status.code != 409:
                    raise ExecutorError(f"create the volume of {about}: {raced.status.message}") from raced
                return await _fresh(client, *made_by)
        holder = holder_of(current)
        if holder is None:
            hold(current, build_id, runner)
            try:  # conditional: `current` carries the resourceVersion it was read at
                await client.replace(current)
                return Claimed(name, kept=True)
            except ApiError as exc:
                if exc.status.code != 409:
                    raise ExecutorError(f"claim the volume of {about}: {exc.status.message}") from exc
            return await _fresh(client, *made_by)
        if ending is None or not ending(holder) or time.monotonic() >= give_up:
            return await _fresh(client, *made_by)
        await asyncio.sleep(HANDOFF_POLL)


async def release(client: AsyncClient, namespace: str, name: str, build_id: str) -> bool:
    """Gives the volume back if this build holds it, noting when; True when it did."""
    try:
        current = await client.get(PersistentVolumeClaim, name, namespace=namespace)
        if holder_of(current) != build_id:
            return False
        assert current.metadata is not None
        annotations = dict(current.metadata.annotations or {})
        annotations.pop(HOLDER, None)
        annotations.pop(HOLDER_RUNNER, None)
        current.metadata.annotations = {**annotations, LAST_USED: stamp(time.time())}
        await client.replace(current)  # conditional on the resourceVersion read
        return True
    except ApiError as exc:
        if exc.status.code in (404, 409):  # gone, or changed by someone else meanwhile: not ours to release
            return False
        raise ExecutorError(f"release the volume {name}: {exc.status.message}") from exc


async def give_back(client: AsyncClient, namespace: str, claimed: Claimed, build_id: str) -> None:
    """At the build's end: the kept volume released, a fresh one deleted (if this build still holds it)."""
    if claimed.kept:
        await release(client, namespace, claimed.name, build_id)
        return
    try:
        current = await client.get(PersistentVolumeClaim, claimed.name, namespace=namespace)
        if holder_of(current) == build_id:
            await client.delete(PersistentVolumeClaim, claimed.name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            raise ExecutorError(f"delete the build's volume {claimed.name}: {exc.status.message}") from exc


def holder_of(found: Any) -> str | None:
    return annotation(found, HOLDER)


def annotation(found: Any, key: str) -> str | None:
    annotations = (found.metadata.annotations if found.metadata else None) or {}
    return annotations.get(key) or None


def last_used(found: Any) -> float:
    """Seconds since the epoch when a build last gave the volume back (or it was made); 0 when unknown."""
    try:
        return datetime.fromisoformat(annotation(found, LAST_USED) or "").timestamp()
    except ValueError:
        return 0.0


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hold(found: Any, build_id: str, runner: str | None) -> None:
    held = {HOLDER: build_id, **({HOLDER_RUNNER: runner} if runner else {})}
    found.metadata.annotations = {**(found.metadata.annotations or {}), **held}


def _made(
    name: str,
    kind: str,
    namespace: str,
    about: str,
    build_id: str,
    size: str,
    storage_class: str | None,
    labels: dict[str, str],
    runner: str | None,
) -> PersistentVolumeClaim:
    made = objects.build_claim(
        name, namespace, size=size, storage_class=storage_class, labels={**labels, KIND_LABEL: kind}
    )
    assert made.metadata is not None
    made.metadata.annotations = {VOLUME_OF: about, LAST_USED: stamp(time.time())}
    hold(made, build_id, runner)
    return made


async def _fresh(
    client: AsyncClient,
    namespace: str,
    about: str,
    build_id: str,
    size: str,
    storage_class: str | None,
    labels: dict[str, str],
    runner: str | None,
) -> Claimed:
    name = objects.dns_label("vol", build_id[:40], uuid.uuid4().hex[:8])
    try:
        await client.create(_made(name, "fresh", namespace, about, build_id, size, storage_class, labels, runner))
    except ApiError as exc:
        raise ExecutorError(f"create a fresh volume for {about}: {exc.status.message}") from exc
    return Claimed(name, kept=False)
