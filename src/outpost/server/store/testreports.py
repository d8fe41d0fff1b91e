"""Test reports (the build page's annotations): the test cases of a build's JUnit reports, as its runner read
them after each step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.server.models import Annotation, Build
from outpost.wire import JUnitCase

# Failures first: what a reader of a red build looks for.
STATUS_ORDER = {"failed": 0, "error": 1, "skipped": 2, "passed": 3}


async def replace(session: AsyncSession, build: Build, step: str, cases: Sequence[JUnitCase]) -> int:
    """The step's test cases, replacing what it sent before (a resend after a cut changes nothing)."""
    await session.execute(delete(Annotation).where(Annotation.build_id == build.id, Annotation.step == step))
    session.add_all(
        Annotation(
            build_id=build.id,
            step=step,
            position=index,
            suite=c.suite,
            classname=c.classname,
            name=c.name,
            status=c.status,
            time=c.time,
            message=c.message,
        )
        for index, c in enumerate(cases)
    )
    await session.flush()
    return len(cases)


@dataclass
class Summary:
    cases: list[Annotation]
    counts: dict[str, int]  # status -> number of cases

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0) + self.counts.get("error", 0)


async def summary(session: AsyncSession, build: Build) -> Summary:
    """Every test case of the build, failures and errors first, then skipped, then passed (each in step and
    report order)."""
    order = case(STATUS_ORDER, value=Annotation.status, else_=len(STATUS_ORDER))
    rows = list(
        await session.scalars(select(Annotation).where(Annotation.build_id == build.id).order_by(order, Annotation.id))
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return Summary(rows, counts)
