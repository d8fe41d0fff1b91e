"""A runner's report: `started`, log appends, step updates and the finish of one build, applied together.

The rules are those of the single calls (builds.mark_started, logs.append, builds.update_step, builds.finish,
builds.renew); a report applies them to the build's steps read once, in memory, and writes the outcome with Core
statements: the new steps in one INSERT, the chunks in one, the changed steps in one executemany UPDATE, then the
build's row and the lease's. Through the unit of work the same writes cost about twice as much CPU (a trivial
build's report: 9 statements and ~5 ms; docs/benchmarks.md "Fleet scale").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm.attributes import set_committed_value

from outpost.server.models import Build, Lease, LogChunk, Step
from outpost.server.security import now
from outpost.server.store import builds, logs
from outpost.server.store.builds import STEP_ORDER, Held, require_live
from outpost.wire import FINAL_STEP_STATUSES, BuildFinished, BuildStarted, Report, ReportHead, StepUpdate


@dataclass
class Append:
    stream: str
    offset: int
    data: bytes


@dataclass
class Outcome:
    """What a report did: each reported stream's size, whether anything changed, and whether its `started` was
    refused (the build was cancelled before it started: it ended `terminated`, nothing else applied)."""

    sizes: dict[str, int] = field(default_factory=dict)
    changed: bool = False
    refused: bool = False


_STEPS: Table = Step.__table__  # type: ignore[assignment]
_CHUNKS: Table = LogChunk.__table__  # type: ignore[assignment]
_BUILDS: Table = Build.__table__  # type: ignore[assignment]
_LEASES: Table = Lease.__table__  # type: ignore[assignment]
# What a report may change of a step (built once: building cost more than running). The steps are read after the
# build's writer lock (logs.one_writer_of), so writing every field back loses nothing another report wrote.
_STEP_FIELDS = ("status", "title", "started_at", "finished_at", "exit_code", "message", "log_size")
_STEPS_OF = select(_STEPS.c.id, _STEPS.c.name, _STEPS.c.position, *(_STEPS.c[f] for f in _STEP_FIELDS)).where(
    _STEPS.c.build_id == bindparam("build_id")
)
_INSERT_STEPS = insert(_STEPS)
_UPDATE_STEPS = update(_STEPS).where(_STEPS.c.id == bindparam("step_id"))
# A chunk names its step by name: new steps are inserted without RETURNING, which costs a statement a row when
# the ids must come back in order (SQLite).
_INSERT_CHUNKS = insert(_CHUNKS).values(
    build_id=bindparam("build_id"),
    step_id=select(_STEPS.c.id)
    .where(_STEPS.c.build_id == bindparam("build_id"), _STEPS.c.name == bindparam("stream"))
    .scalar_subquery(),
    offset=bindparam("offset"),
    data=bindparam("data"),
)
# The build's and the lease's UPDATE set only what the report changed (their parameters name the columns, one
# compiled form a set of them): a value read before this transaction waited for another's lock is never written back.
_UPDATE_BUILD = update(_BUILDS).where(_BUILDS.c.id == bindparam("build_id"))
_UPDATE_LEASE = update(_LEASES).where(_LEASES.c.id == bindparam("lease_id"))
_NEW_STEP = dict(position=0, title=None, stage=None, type="freestyle", parent=None, status="pending", log_size=0)
_NEW_STEP.update(exit_code=None, message=None, started_at=None, finished_at=None)


@dataclass
class _Step:
    """A step as the report leaves it: `row` holds its id (None while new) and every field a report may change."""

    name: str
    position: int
    row: dict[str, Any]
    new: bool = False
    dirty: bool = False


async def apply(
    conn: AsyncConnection,
    build_id: str,
    lease_id: str,
    job_token: str,
    report: Report | ReportHead,
    appends: list[Append],
    lease_ttl: float,
) -> tuple[Held, Outcome]:
    """Applies the report in order (`started`, the appends, the step updates, the finish) and renews the lease, in
    one transaction of its own on `conn`: committed, or rolled back on the first refusal (401 and 409 as
    builds.hold and builds.require_live, 416 for an offset that leaves a gap: logs.OffsetGap). No session: BEGIN,
    the statements and COMMIT run in one synchronous pass (one greenlet for all of them, not one a statement)."""
    return await conn.run_sync(_in_transaction, build_id, lease_id, job_token, report, appends, lease_ttl)


def _in_transaction(conn: Connection, *args: Any) -> tuple[Held, Outcome]:
    with conn.begin():
        return _apply(conn, *args)


def _apply(
    conn: Connection,
    build_id: str,
    lease_id: str,
    job_token: str,
    report: Report | ReportHead,
    appends: list[Append],
    lease_ttl: float,
) -> tuple[Held, Outcome]:
    held = builds.held_of(conn, build_id, lease_id, job_token)
    build, lease = held.build, held.lease
    started, steps, finish = report.started, report.steps, report.finish
    outcome = Outcome()
    if finish is not None and _already_finished(held, finish):  # a resent final report: sizes, nothing else
        known = _steps_of(conn, build.id) if appends else {}
        outcome.sizes = {a.stream: known[a.stream].row["log_size"] if a.stream in known else 0 for a in appends}
        return held, outcome
    # A `started` taken already from this lease (a resent report) is nothing to do: the rest of the report decides.
    starts = started is not None and not (build.lease_id == lease.id and build.status != "claimed")
    build_set: dict[str, Any] = {}
    if starts or appends or steps or finish is not None:
        require_live(held)
        logs.one_writer_of(conn, build.id)  # before the steps' sizes are read
        applied = _Report(build, _steps_of(conn, build.id))
        if starts and build.status == "claimed" and build.cancel_requested:
            applied.finish(build_set, "terminated", "cancelled before it started")
            outcome.refused = True
        else:
            if started is not None and starts:
                applied.start(build_set, started)
            for append in appends:
                outcome.sizes[append.stream] = applied.append(append)
            for step in steps:
                applied.update(step.name, step.update)
            if finish is not None:
                applied.finish(build_set, finish.status, finish.message)
        outcome.changed = applied.write(conn) or bool(build_set)
    if build_set:
        conn.execute(_UPDATE_BUILD, {"build_id": build.id, **build_set})
        for key, value in build_set.items():  # what the caller's wake-ups and metrics read of the build
            set_committed_value(build, key, value)
    lease_set = {"ended_at": build_set["finished_at"], "end_reason": "finished"} if "finished_at" in build_set else {}
    if not outcome.refused and lease.ended_at is None and not lease_set:  # builds.renew: proof of life
        lease_set["expires_at"] = now() + lease_ttl
    if lease_set:
        conn.execute(_UPDATE_LEASE, {"lease_id": lease.id, **lease_set})
        for key, value in lease_set.items():
            set_committed_value(lease, key, value)
    return held, outcome


def _already_finished(held: Held, finish: BuildFinished) -> bool:
    """A resent final report: the build was finished, by this very lease, as reported."""
    build, lease = held.build, held.lease
    return build.lease_id == lease.id and lease.end_reason == "finished" and build.status == finish.status


def _steps_of(conn: Connection, build_id: str) -> dict[str, _Step]:
    rows = (conn.execute(_STEPS_OF, {"build_id": build_id})).all()
    found = {}
    for row in sorted(rows, key=lambda r: (r.position, r.id)):  # list_steps' order
        values = row._asdict()
        found[row.name] = _Step(values.pop("name"), values.pop("position"), values)
    return found


class _Report:
    """The build's steps through one report: the rules of builds.py and logs.py applied in memory."""

    def __init__(self, build: Build, steps: dict[str, _Step]) -> None:
        self.build = build
        self.steps = steps
        self.chunks: list[dict[str, Any]] = []  # in the order they were accepted (their ids: followers' cursor)

    def step(self, name: str) -> _Step:
        """The step of that name, made on first mention (the system stream, a late plan), as builds.step_for."""
        step = self.steps.get(name)
        if step is None:
            step = self._add(name, 0 if name.startswith("$") else 10_000)
        return step

    def _add(self, name: str, position: int, **plan: Any) -> _Step:
        step = self.steps[name] = _Step(name, position, {"id": None, **_NEW_STEP, "position": position, **plan}, True)
        return step

    def start(self, build_set: dict[str, Any], message: BuildStarted) -> None:
        """builds.mark_started: running, the YAML the runner read from the repository, the planned steps."""
        build = self.build
        if build.status == "claimed":
            build_set.update(status="running", started_at=now())
        if build.yaml_repo is not None and message.yaml is not None:
            build_set.update(yaml=message.yaml, yaml_revision=message.yaml_revision)
        for position, plan in enumerate(message.steps, start=1):
            if plan.name not in self.steps:
                self._add(plan.name, position, title=plan.title, stage=plan.stage, type=plan.type, parent=plan.parent)

    def append(self, append: Append) -> int:
        """logs.append's offset rules; returns the step's log size afterwards."""
        step = self.step(append.stream)
        size: int = step.row["log_size"]
        fresh = logs.fresh_part(append.stream, size, append.offset, append.data)
        if fresh:
            self.chunks.append({"build_id": self.build.id, "stream": step.name, "offset": size, "data": fresh})
            step.row["log_size"] = size = size + len(fresh)
            step.dirty = True
        return size

    def update(self, name: str, update_: StepUpdate) -> None:
        """builds.update_step: a step never moves backwards, and its first final status wins."""
        step = self.step(name)
        row = step.row
        if row["status"] in FINAL_STEP_STATUSES:
            return
        if update_.status not in FINAL_STEP_STATUSES and STEP_ORDER[update_.status] < STEP_ORDER[row["status"]]:
            return
        row["status"] = update_.status
        for name_ in ("title", "started_at", "finished_at", "exit_code", "message"):
            value = getattr(update_, name_)
            if value is not None:
                row[name_] = value
        step.dirty = True

    def finish(self, build_set: dict[str, Any], status: str, message: str | None) -> None:
        """builds._finish: the build's final status, and its steps that had not ended skipped or stopped."""
        t = now()
        build_set.update(status=status, message=message, finished_at=t)
        for step in self.steps.values():
            row = step.row
            if row["status"] == "pending":
                row["status"] = "skipped"
                step.dirty = True
            elif row["status"] == "running":
                row["status"] = "terminated" if status == "terminated" else "error"
                row["finished_at"] = t
                row["message"] = row["message"] or message
                step.dirty = True

    def write(self, conn: Connection) -> bool:
        """Writes the steps and chunks; whether anything of them changed."""
        build_id = self.build.id
        new = [{"build_id": build_id, "name": s.name, **s.row} for s in self.steps.values() if s.new]
        if new:
            conn.execute(_INSERT_STEPS, [{k: v for k, v in row.items() if k != "id"} for row in new])
        if self.chunks:
            conn.execute(_INSERT_CHUNKS, self.chunks)
        changed = [
            {"step_id": s.row["id"], **{f: s.row[f] for f in _STEP_FIELDS}}
            for s in self.steps.values()
            if s.dirty and not s.new
        ]
        if changed:
            conn.execute(_UPDATE_STEPS, changed)
        return bool(new or self.chunks or changed)
