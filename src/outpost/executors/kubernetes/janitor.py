"""The janitor of build volume claims (`claims.py`), run by the runner at start and then every few minutes.

It removes, a bounded number per pass: kept volumes no build holds that were last used longer ago than the
retention (`--volume-retention`); kept volumes of a pipeline beyond its cap (`--volumes-per-pipeline`), least
recently used first; fresh volumes no build holds (their build could not delete them). A volume held by a build
of this runner that the runner no longer has (its folder was lost) is given back first. A held volume is never
removed: the janitor takes a volume itself with the same conditional update a build uses (so a build taking it
at that moment wins, and the janitor leaves it) and only then deletes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import PersistentVolumeClaim

from outpost.errors import ExecutorError
from outpost.executors.kubernetes import api, claims, objects

log = logging.getLogger("outpost.runner.janitor")
JANITOR = "outpost-janitor"  # the holder the janitor writes before it deletes a volume
INTERVAL = 300.0  # seconds between passes
PER_PASS = 20  # volumes removed at most per pass: a large backlog goes over several passes
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_CAP = 5
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Removal:
    name: str
    why: str


def parse_retention(text: str) -> float:
    """`90s`, `30m`, `12h`, `7d`, `2w` or plain seconds, as seconds; ValueError with the reason otherwise."""
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in UNITS else (text, "s")
    try:
        seconds = float(number) * UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (e.g. 7d, 12h, 30m, or seconds)") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: a retention must be more than 0")
    return seconds


async def sweep(
    client: AsyncClient,
    namespace: str,
    *,
    retention: float,
    cap: int,
    runner: str | None,
    active: Callable[[], set[str]],
    now: float | None = None,
    limit: int = PER_PASS,
) -> list[Removal]:
    """One pass; returns what it removed and why. `active`: the builds this runner runs now (read after the list,
    so a build that took a volume before the list is in it)."""
    found = await api.call(
        "list the build volumes",
        lambda: api.collect(client.list(PersistentVolumeClaim, namespace=namespace, labels=dict(objects.MANAGED_BY))),
    )
    volumes = [c for c in found if _labels(c).get(claims.KIND_LABEL) in ("kept", "fresh")]
    running = active()
    now = time.time() if now is None else now
    for volume in volumes:  # a build of ours that is gone (its folder lost) holds nothing any more
        holder = claims.holder_of(volume)
        ours = bool(runner) and claims.annotation(volume, claims.HOLDER_RUNNER) == runner
        if not (ours and holder and holder != JANITOR and holder not in running):
            continue
        if await claims.release(client, namespace, api.name_of(volume), str(holder)):
            log.info("build volume %s: given back for build %s, which this runner no longer has",
                     api.name_of(volume), holder)  # fmt: skip
            assert volume.metadata is not None
            volume.metadata.annotations = {
                k: v for k, v in (volume.metadata.annotations or {}).items() if k != claims.HOLDER
            }
    wanted: list[Removal] = []
    by_pipeline: dict[str, list[Any]] = {}
    for volume in volumes:
        holder = claims.holder_of(volume)
        name = api.name_of(volume)
        if _labels(volume).get(claims.KIND_LABEL) == "fresh":
            if holder is None or holder == JANITOR:
                wanted.append(Removal(name, "a fresh volume no build holds"))
            continue
        if holder is not None and holder != JANITOR:
            by_pipeline.setdefault(_labels(volume).get(claims.PIPELINE_LABEL, ""), []).append(volume)
            continue
        idle = now - claims.last_used(volume)
        if idle > retention:
            wanted.append(Removal(name, f"last used {_days(idle)} ago, longer than the retention ({_days(retention)})"))
        else:
            by_pipeline.setdefault(_labels(volume).get(claims.PIPELINE_LABEL, ""), []).append(volume)
    for group in by_pipeline.values():
        beyond = len(group) - cap
        free = sorted((v for v in group if claims.holder_of(v) in (None, JANITOR)), key=claims.last_used)
        for volume in free[: max(beyond, 0)]:
            wanted.append(Removal(api.name_of(volume), f"beyond the cap of {cap} volumes per pipeline (least "
                                                         "recently used)"))  # fmt: skip
    removed = []
    for removal in wanted[:limit]:
        if await _remove(client, namespace, removal.name):
            log.info("build volume %s removed: %s", removal.name, removal.why)
            removed.append(removal)
    log.info("build volumes: %d found, %d removed", len(volumes), len(removed))
    return removed


async def _remove(client: AsyncClient, namespace: str, name: str) -> bool:
    """Takes the volume (conditionally, as a build would: a build that takes it first wins), then deletes it."""
    try:
        current = await client.get(PersistentVolumeClaim, name, namespace=namespace)
        if claims.holder_of(current) not in (None, JANITOR):
            return False
        claims.hold(current, JANITOR, None)
        await client.replace(current)
        await client.delete(PersistentVolumeClaim, name, namespace=namespace)
        return True
    except ApiError as exc:
        if exc.status.code in (404, 409):
            return False
        raise ExecutorError(f"remove the build volume {name}: {exc.status.message}") from exc


class Janitor:
    """The runner's janitor task: `run` sweeps at once and then every `interval` seconds until cancelled."""

    def __init__(self, options: Mapping[str, str], active: Callable[[], set[str]]) -> None:
        self.config = api.config_of(options)
        self.namespace = api.namespace_of(options, self.config)
        self.retention = parse_retention(options.get("volume_retention") or str(DEFAULT_RETENTION))
        self.cap = int(options.get("volumes_per_pipeline") or DEFAULT_CAP)
        self.runner = (
            objects.runner_mark(options.get("work_claim", ""), options["runner_folder"])
            if options.get("runner_folder")
            else None
        )
        self.active = active

    async def run(self, interval: float = INTERVAL) -> None:
        async with AsyncClient(self.config, namespace=self.namespace, field_manager="outpost") as client:
            while True:
                try:
                    await sweep(client, self.namespace, retention=self.retention, cap=self.cap, runner=self.runner,
                                active=self.active)  # fmt: skip
                except ExecutorError as exc:
                    log.warning("the build volume janitor's pass failed (%s); next pass in %gs", exc, interval)
                await asyncio.sleep(interval)


def _labels(found: Any) -> dict[str, str]:
    return dict((found.metadata.labels if found.metadata else None) or {})


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"
