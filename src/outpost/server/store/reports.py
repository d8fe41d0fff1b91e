"""A runner's report: log appends, step updates and the finish of one build, applied together."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.store import builds, logs
from outpost.server.store.builds import Held
from outpost.wire import BuildFinished, StepUpdate


@dataclass
class Append:
    stream: str
    offset: int
    data: bytes


async def apply(
    session: AsyncSession,
    held: Held,
    appends: list[Append],
    steps: list[tuple[str, StepUpdate]],
    finish: BuildFinished | None,
) -> tuple[dict[str, int], bool]:
    """Applies the report in order; raises (and the caller's transaction rolls back) on the first
    refusal. Returns each reported stream's size and whether anything changed."""
    if finish is not None and _already_finished(held, finish):
        return {a.stream: (await builds.step_for(session, held.build, a.stream)).log_size for a in appends}, False
    sizes: dict[str, int] = {}
    changed = False
    for append in appends:
        sizes[append.stream], stored = await logs.append(session, held, append.stream, append.offset, append.data)
        changed = changed or stored
    for name, update in steps:
        await builds.update_step(session, held, name, update)
        changed = True
    if finish is not None:
        await builds.finish(session, held, finish)
        changed = True
    return sizes, changed


def _already_finished(held: Held, finish: BuildFinished) -> bool:
    """A resent final report: the build was finished, by this very lease, as reported."""
    build, lease = held.build, held.lease
    return build.lease_id == lease.id and lease.end_reason == "finished" and build.status == finish.status
