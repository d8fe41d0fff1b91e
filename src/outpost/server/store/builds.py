"""Builds and their life: queued → claimed (leased by a runner) → running → a final status.

Leases are the fencing mechanism: a runner may act on a build only through the build's current
lease, until that lease ends. Only the reaper (server/dispatch.py) ends a lease for lack of
heartbeats, when its expiry has passed and the control plane itself was available for a whole TTL:
it gives a never-started build back to the queue and ends a started one as `error` ("runner lost").
Until then a late heartbeat still renews the lease. The holder of an expired lease may still hand in
the log bytes it kept (`require_expired_holder`), marked late.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Select,
    Table,
    bindparam,
    func,
    insert,
    inspect,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from outpost.errors import Conflict, NotFound, Unauthorized
from outpost.server.models import Build, Lease, Pipeline, Runner, Step, Trigger
from outpost.server.security import JOB_TOKEN, new_id, new_token, now, token_hash
from outpost.server.store import audit
from outpost.server.store.accounts import Principal
from outpost.server.store.pipelines import check_variables
from outpost.triggers.event import GitEvent
from outpost.wire import (
    FINAL_BUILD_STATUSES,
    FINAL_STEP_STATUSES,
    SYSTEM_STREAM,
    BuildFinished,
    BuildStarted,
    PipelineSource,
    ResumeFrom,
    StepUpdate,
)

CLAIM_ATTEMPTS = 5
LATE_LOG_WINDOW = 24 * 3600.0  # seconds after its lease expired that a runner may still hand in a build's log
LIVE_STATUSES = ("claimed", "running")
STEP_ORDER = {"pending": 0, "running": 1, "pending-approval": 2}  # every final status ranks above these


async def create_build(
    session: AsyncSession,
    principal: Principal,
    pipeline: Pipeline,
    *,
    variables: dict[str, str] | None = None,
    branch: str | None = None,
    sha: str | None = None,
    trigger: str = "build",
    initiator: str | None = None,
    trigger_id: str | None = None,
    event: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    restarted_from: Build | None = None,
) -> Build:
    run_variables = dict(variables or {})
    check_variables(run_variables)
    values = dict(
        id=new_id(),
        account_id=principal.account_id,
        pipeline_id=pipeline.id,
        pipeline_name=pipeline.name,
        number=await _next_number(session, pipeline.id),
        runtime_id=pipeline.runtime_id,
        status="queued",
        yaml=pipeline.yaml,
        yaml_file=pipeline.yaml_file,
        variables={**pipeline.variables, **run_variables},
        secrets={k: v for k, v in pipeline.secrets.items() if k not in run_variables},
        trigger=trigger,
        initiator=initiator if initiator is not None else principal.token_name,
        initiator_id=principal.identity if principal.token_id else None,
        branch=branch,
        sha=sha,
        created_at=now(),
        trigger_id=trigger_id,
        event=event,
        git_context=context if restarted_from is None else restarted_from.git_context,
        restarted_from=restarted_from.id if restarted_from is not None else None,
        yaml_repo=pipeline.repo,
        yaml_git=pipeline.git if pipeline.repo else None,
        # YAML from the repository is read at the build's revision: its SHA, its branch, or the pipeline's default.
        yaml_ref=(sha or branch or pipeline.revision) if pipeline.repo else None,
        **_NOT_YET,
    )
    # Written with a Core INSERT and the row put in the session as if loaded: the unit of work's flush of a new
    # object cost more than twice the statement (a build request's largest step). Later changes flush as usual.
    await session.execute(_INSERT_BUILD, values)
    return _loaded(session, Build, values)


# What a new build has not had yet: every column create_build does not set (`_loaded` needs them all).
_NOT_YET: dict[str, Any] = dict(
    message=None,
    claimed_at=None,
    started_at=None,
    finished_at=None,
    runner_id=None,
    lease_id=None,
    cancel_requested=False,
    cancelled_by=None,
    resume_steps=None,
    requeues=0,
    yaml_revision=None,
)
_BUILDS: Table = Build.__table__  # type: ignore[assignment]
_LEASES: Table = Lease.__table__  # type: ignore[assignment]
_INSERT_BUILD = insert(_BUILDS)
_INSERT_LEASE = insert(_LEASES)

_RUNNERS: Table = Runner.__table__  # type: ignore[assignment]
_RUNNER_BY_ID = select(_RUNNERS).where(_RUNNERS.c.id == bindparam("runner_id"))

M = TypeVar("M", Build, Lease, Runner)


def _loaded(session: AsyncSession, model: type[M], values: Mapping[Any, Any]) -> M:
    """The ORM object of a row this transaction has just written with a Core statement, whose every column is in
    `values`: in the session as if a query had loaded it (no SQL), so that later changes to it flush as usual. An
    object of that row the session holds already is brought up to date instead (as `populate_existing` would)."""
    instance = session.identity_map.get(session.identity_key(model, values["id"]))
    if isinstance(instance, model):
        for key, value in values.items():
            set_committed_value(instance, key, value)
        return instance
    missing = model.__table__.c.keys() - values.keys()
    if missing:  # an unloaded column would be read lazily, which an async session cannot do
        raise ValueError(f"{model.__name__} row without {', '.join(sorted(missing))}")
    # The values go in as loaded state, as a query's rows do: through the constructor, each attribute's set event
    # ran (85 µs a build against 27).
    made: M = inspect(model).class_manager.new_instance()
    made.__dict__.update(values)
    make_transient_to_detached(made)
    session.add(made)
    return made


async def _next_number(session: AsyncSession, pipeline_id: str) -> int:
    """The pipeline's next build number. One statement reads and bumps the counter: on PostgreSQL its row lock
    makes a concurrent creation wait and then see the new value; SQLite runs one writer at a time. Either way
    two builds of a pipeline never get one number (the unique constraint would refuse it anyway)."""
    number = await session.scalar(_BUMP_NUMBER, {"pipeline_id": pipeline_id})
    if number is None:
        raise NotFound(f"no pipeline {pipeline_id!r}")
    return int(number)


# Built once (building it cost more than running it). On the table, not the entity: no ORM bookkeeping to do.
_BUMP_NUMBER = (
    update(Pipeline.__table__)  # type: ignore[arg-type]
    .where(Pipeline.__table__.c.id == bindparam("pipeline_id"))
    .values(last_build_number=Pipeline.__table__.c.last_build_number + 1)
    .returning(Pipeline.__table__.c.last_build_number)
)


# Where a provider shows a repository's commits and pull requests, below its web address and owner/name.
_WEB_PATHS = {
    "github": ("/{repo}/commit/{sha}", "/{repo}/pull/{n}"),
    "gitlab": ("/{repo}/-/commit/{sha}", "/{repo}/-/merge_requests/{n}"),
    "bitbucket-server": (
        "/projects/{project}/repos/{slug}/commits/{sha}",
        "/projects/{project}/repos/{slug}/pull-requests/{n}",
    ),
}
_DEFAULT_WEB = {"github": "https://github.com", "gitlab": "https://gitlab.com"}


def git_context(event: GitEvent, web: str | None) -> dict[str, Any]:
    """What a page says of a webhook build's commit: message, author, pull request, and links to the provider's
    pages, under `web` (the Git integration's address) or the provider's public site. Only http(s) links."""
    base = (web or _DEFAULT_WEB.get(event.provider) or "").rstrip("/")
    for api_suffix in ("/api/v3", "/api/v4", "/rest/api/1.0"):
        base = base.removesuffix(api_suffix)
    commit_path, pr_path = _WEB_PATHS[event.provider]
    project, _, slug = event.repo.partition("/")
    names = {"repo": event.repo, "project": project, "slug": slug}
    sha = event.pr_merged_commit if event.pr_merged and event.pr_merged_commit else event.after

    def link(path: str, **values: Any) -> str | None:
        if not base.startswith(("https://", "http://")) or not event.repo:
            return None
        return base + path.format(**names, **values)

    return {
        "provider": event.provider,
        "repo": event.repo,
        "event": event.event,
        "message": (event.commit_message or "")[:2000] or None,
        "author": event.commit_author,
        "commit_url": _http(event.commit_url) or (link(commit_path, sha=sha) if sha else None),
        "pr_number": event.pr_number,
        "pr_title": event.pr_title,
        "pr_url": link(pr_path, n=event.pr_number) if event.pr_number else None,
        "pr_target": event.pr_target_branch,
    }


def _http(url: str | None) -> str | None:
    """A link a page may show: http(s) only (a payload could say `javascript:`)."""
    return url if url and url.startswith(("https://", "http://")) else None


def pipeline_source(build: Build) -> PipelineSource | None:
    """Where the runner reads the YAML of a build whose pipeline keeps it in the repository."""
    if build.yaml_repo is None:
        return None
    return PipelineSource(repo=build.yaml_repo, git=build.yaml_git, path=build.yaml_file, revision=build.yaml_ref)


async def cancel_superseded(session: AsyncSession, build: Build) -> list[Build]:
    """A trigger's terminationPolicy: the older unfinished builds of the same trigger and branch end (queued)
    or are asked to stop (claimed, running). Returns the builds it touched."""
    if build.trigger_id is None or build.branch is None:
        return []
    older = await session.scalars(
        select(Build).where(
            Build.trigger_id == build.trigger_id,
            Build.branch == build.branch,
            Build.id != build.id,
            Build.created_at <= build.created_at,
            Build.status.in_(("queued", *LIVE_STATUSES)),
            Build.cancel_requested.is_(False),
        )
    )
    touched = []
    for old in older:
        if old.status == "queued":
            await _finish(session, old, "terminated", f"superseded by build {build.id} of branch {build.branch}")
        else:
            old.cancel_requested = True
        touched.append(old)
    return touched


async def get_build(session: AsyncSession, principal: Principal, build_id: str) -> Build:
    build = await session.get(Build, build_id)
    if build is None or build.account_id != principal.account_id:
        raise NotFound(f"no build {build_id!r} in this account")
    if principal.pipeline_id and build.pipeline_id != principal.pipeline_id:  # a token scoped to another pipeline
        raise NotFound(f"no build {build_id!r} in this account")
    return build


async def get_build_by_number(session: AsyncSession, principal: Principal, pipeline: Pipeline, number: int) -> Build:
    """A build by its pipeline and number ("my-app#42"); the pipeline was found in the caller's account."""
    build = await session.scalar(select(Build).where(Build.pipeline_id == pipeline.id, Build.number == number))
    if build is None:
        raise NotFound(f"no build #{number} of pipeline {pipeline.name!r}")
    return await get_build(session, principal, build.id)


@dataclass(frozen=True)
class BuildFilter:
    """What a builds list asks for; empty fields ask for nothing. `search` looks in the pipeline's name, the
    branch and the commit message (case-insensitive)."""

    pipeline: str | None = None
    status: str | None = None
    branch: str | None = None
    trigger: str | None = None
    author: str | None = None  # who started it (the initiator: a user, token or the Git event's actor)
    search: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        for column, value in (
            (Build.pipeline_name, self.pipeline),
            (Build.status, self.status),
            (Build.branch, self.branch),
            (Build.trigger, self.trigger),
            (Build.initiator, self.author),
        ):
            if value:
                found.append(column == value)
        if self.search:
            text = self.search.lower()
            message = func.lower(Build.git_context["message"].as_string())
            found.append(
                or_(
                    func.lower(Build.pipeline_name).contains(text, autoescape=True),
                    func.lower(Build.branch).contains(text, autoescape=True),
                    message.contains(text, autoescape=True),
                )
            )
        return found


async def list_builds(
    session: AsyncSession,
    principal: Principal,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    limit: int = 50,
    where: BuildFilter | None = None,
    before: str | None = None,
) -> list[Build]:
    """Newest first. `before` (a build id, the last of the previous page) pages on by keyset (created_at, id):
    each page costs the same however deep it is."""
    query = select(Build).where(Build.account_id == principal.account_id)
    if principal.pipeline_id:
        query = query.where(Build.pipeline_id == principal.pipeline_id)
    asked = where or BuildFilter()
    if pipeline or status:
        asked = BuildFilter(
            **{**asked.__dict__, "pipeline": pipeline or asked.pipeline, "status": status or asked.status}
        )
    query = query.where(*asked.where())
    if before is not None:
        anchor = await session.get(Build, before)
        if anchor is None or anchor.account_id != principal.account_id:
            raise NotFound(f"no build {before!r} in this account to page on from")
        query = query.where(
            Build.created_at <= anchor.created_at, tuple_(Build.created_at, Build.id) < (anchor.created_at, anchor.id)
        )
    rows = await session.scalars(query.order_by(Build.created_at.desc(), Build.id.desc()).limit(limit))
    return list(rows)


async def list_steps(session: AsyncSession, build: Build) -> list[Step]:
    if build.id in session.info.get(_EVERY_STEP_SEEN, ()):
        known = [step for (build_id, _), step in _seen_steps(session).items() if build_id == build.id]
        # The query's order: by position, then id. A step added in this transaction and not flushed yet will get a
        # larger id than every stored one, in the order the steps were added: the seen map's, which the sort keeps.
        return sorted(known, key=lambda step: (step.position, step.id if step.id is not None else _UNFLUSHED))
    rows = list(await session.scalars(select(Step).where(Step.build_id == build.id).order_by(Step.position, Step.id)))
    seen = _seen_steps(session)
    seen.update({(build.id, step.name): step for step in rows})
    session.info.setdefault(_EVERY_STEP_SEEN, set()).add(build.id)
    return rows


# A report names its steps several times (the plan, each stream, each update); the rows this session has loaded or
# added are kept by (build id, name) in its `info`, so that each is read once a transaction (a report's statements:
# 20 -> 12). A session is one transaction of one request; a build whose every step it listed needs no look for a
# name it lacks: that step is new.
_STEPS_SEEN = "outpost.steps_seen"
_UNFLUSHED = 1 << 62  # sorts after any stored step id
_EVERY_STEP_SEEN = "outpost.every_step_seen"


def _seen_steps(session: AsyncSession) -> dict[tuple[str, str], Step]:
    seen: dict[tuple[str, str], Step] = session.info.setdefault(_STEPS_SEEN, {})
    return seen


async def _known_step(session: AsyncSession, build: Build, name: str) -> Step | None:
    seen = _seen_steps(session)
    step = seen.get((build.id, name))
    if step is None and build.id not in session.info.get(_EVERY_STEP_SEEN, ()):
        step = await session.scalar(select(Step).where(Step.build_id == build.id, Step.name == name))
        if step is not None:
            seen[(build.id, name)] = step
    return step


async def request_cancel(session: AsyncSession, principal: Principal, build_id: str) -> Build:
    """A queued build ends at once; a running one is told through its runner's poll and heartbeat."""
    build = await get_build(session, principal, build_id)
    if build.status in FINAL_BUILD_STATUSES:
        raise Conflict(f"build {build_id} already finished ({build.status})")
    if build.status == "queued":
        await _finish(session, build, "terminated", "cancelled before it started")
    else:
        build.cancel_requested = True
    build.cancelled_by = principal.actor
    await audit.record(session, principal, "build.cancel", f"build {build.id}", pipeline=build.pipeline_name)
    return build


FAILED_BUILD_STATUSES = ("failure", "error", "terminated")


async def restart_build(
    session: AsyncSession, principal: Principal, old: Build, pipeline: Pipeline, *, from_failed: bool = False
) -> Build:
    """A new build of what `old` built: its branch, commit and variables; `restarted_from` links the two.

    A plain restart (of any build, finished or not) runs the pipeline as it is now. A restart from the failed step
    runs `old`'s own YAML (the same commit's file, for YAML from the repository), secrets and event, and lists the
    steps that succeeded in `old`: the runner skips them only when it still holds `old`'s volume as `old` left it,
    else every step runs (the design and why it never gives a wrong result: docs/artifacts.md)."""
    if from_failed and old.status not in FINAL_BUILD_STATUSES:
        raise Conflict(f"build #{old.number} is still {old.status}: restart it from a failed step once it has ended")
    if from_failed and old.status not in FAILED_BUILD_STATUSES:
        raise Conflict(f"build #{old.number} succeeded: no step failed to restart from (restart it whole)")
    build = await create_build(
        session,
        principal,
        pipeline,
        variables={str(k): str(v) for k, v in old.variables.items()},
        branch=old.branch,
        sha=old.sha,
        restarted_from=old,
    )
    if from_failed:
        build.yaml, build.yaml_file, build.secrets, build.event = old.yaml, old.yaml_file, dict(old.secrets), old.event
        build.yaml_repo, build.yaml_git = (old.yaml_repo, old.yaml_git) if old.yaml_revision else (None, None)
        build.yaml_ref = old.yaml_revision if build.yaml_repo else None
        steps = await list_steps(session, old)
        build.resume_steps = [s.name for s in steps if s.status == "success" and s.name != SYSTEM_STREAM]
    await audit.record(
        session,
        principal,
        "build.restart",
        f"build {build.id}",
        pipeline=build.pipeline_name,
        restarted_from=old.id,
        from_failed=from_failed,
    )
    await session.flush()
    return build


async def restarts_of(session: AsyncSession, build: Build) -> list[Build]:
    """The builds that restarted `build`, oldest first (the page links both ways)."""
    rows = await session.scalars(
        select(Build)
        .where(Build.restarted_from == build.id, Build.account_id == build.account_id)
        .order_by(Build.number)
    )
    return list(rows)


async def resume_of(session: AsyncSession, build: Build) -> ResumeFrom | None:
    """What the runner is told of a restart from the failed step (None for any other build)."""
    if build.resume_steps is None or build.restarted_from is None:
        return None
    original = await session.get(Build, build.restarted_from)
    number = original.number if original is not None else 0
    return ResumeFrom(build_id=build.restarted_from, number=number, steps=list(build.resume_steps))


# --- the runner's side -------------------------------------------------------------------------


async def runner_for_look(session: AsyncSession, runner_id: str) -> Runner:
    """The runner a held poll looks for work for, read in the look's transaction (`claim_next` relies on that).
    A Core statement, the row put in the session as loaded (`_loaded`): an ORM `get` cost twice as much."""
    row = (await session.execute(_RUNNER_BY_ID, {"runner_id": runner_id})).one_or_none()
    if row is None:
        raise Unauthorized("unknown or revoked runner token")
    return _loaded(session, Runner, row._mapping)


@dataclass(frozen=True)
class Claim:
    """A build handed to a runner: the build, its new lease and the lease's job token (shown only here). `more`: when
    the build was picked, another queued build of the runtime was there too (the poll passes the wake-up on)."""

    build: Build
    lease: Lease
    job_token: str
    more: bool


async def claim_next(session: AsyncSession, runner: Runner, lease_ttl: float) -> Claim | None:
    """Atomically hands the oldest queued build of the runner's runtime to this runner, skipping builds
    whose trigger already has as many builds out as its concurrency allows. 401 for a revoked runner: once there
    is a candidate its row is locked, before the claim, so a claim and a revocation exclude each other and a
    revoked runner is never handed a build (nor its secrets) by a claim that read the runner before the
    revocation committed; a drained runner gets none either. With nothing to claim it runs one query and takes
    no lock. `runner` must have been read in this transaction."""
    locked: str | None = None
    runner_locked = False
    for _ in range(CLAIM_ATTEMPTS):
        # The two oldest: the second says whether the wake-up should go on to another poll (a look of its own after
        # the claim cost a statement a claim).
        rows = (await session.execute(_NEXT_QUEUED, _of(runner))).all()
        if not rows:
            return None  # an idle poll's look ends here: one query, no lock
        candidate, trigger_id = rows[0]
        if not runner_locked:
            if session.get_bind().dialect.name == "sqlite":
                # One connection: no revocation or drain commits while this transaction, which read `runner`,
                # runs; what it read is current (a statement fewer a claim).
                revoked_at, drained_at = runner.revoked_at, runner.drained_at
            else:
                revoked_at, drained_at = (
                    await session.execute(
                        select(Runner.revoked_at, Runner.drained_at).where(Runner.id == runner.id).with_for_update()
                    )
                ).one()
            if revoked_at is not None:
                raise Unauthorized("this runner was revoked")
            if drained_at is not None:
                return None  # drained (maybe since this poll began): it takes no new build
            runner_locked = True
        if trigger_id is not None:
            # Two runners may pick builds of one trigger at once: the trigger's row lock makes them count in
            # turn. One lock per transaction at most, so two claims never wait on each other's locks.
            if locked not in (None, trigger_id) or await _trigger_is_busy(session, trigger_id):
                return None
            locked = trigger_id
        t = now()
        job_token = new_token(JOB_TOKEN)
        lease_id = new_id()
        # The status condition makes the claim atomic: of two runners racing, one updates the row. RETURNING
        # loads the claimed build in the same statement (a SELECT after it cost a statement a claim). Core
        # statements, the rows put in the session as loaded (`_loaded`): through the ORM the UPDATE and the
        # lease's flush cost twice as much.
        row = (
            await session.execute(
                _CLAIM, {"build_id": candidate, "runner_id": runner.id, "lease_id": lease_id, "claimed_at": t}
            )
        ).one_or_none()
        if row is not None:
            lease = {
                "id": lease_id,
                "account_id": runner.account_id,
                "build_id": candidate,
                "runner_id": runner.id,
                "job_token_hash": token_hash(job_token),
                "created_at": t,
                "expires_at": t + lease_ttl,
                "ended_at": None,
                "end_reason": None,
            }
            await session.execute(_INSERT_LEASE, lease)
            build = _loaded(session, Build, row._mapping)
            return Claim(build, _loaded(session, Lease, lease), job_token, more=len(rows) > 1)
    return None


async def give_back(session: AsyncSession, build_id: str, lease_id: str) -> Build | None:
    """A build claimed for a poll that could not hand it over (its runner hung up first) goes back to the queue at
    once, its lease ended, instead of waiting for the lease to expire. Not counted as a requeue: nothing of it ran
    and no runner was at fault. None if the build is no longer that lease's unstarted claim (a cancel asked
    meanwhile is left to the reaper, which ends such a build)."""
    row = (await session.execute(_GIVE_BACK, {"build_id": build_id, "held_lease": lease_id})).one_or_none()
    if row is None:
        return None
    await session.execute(_END_LEASE, {"lease_id": lease_id, "t": now(), "why": "not handed over"})
    return _loaded(session, Build, row._mapping)


def _of(runner: Runner) -> dict[str, str]:
    return {"runtime_id": runner.runtime_id, "account_id": runner.account_id}


def _busy_triggers(account_id: str | BindParameter[str]) -> Select[Any]:
    """The account's triggers with a concurrency limit that many builds are out (claimed or running)."""
    out = (
        select(func.count(Build.id))
        .where(Build.trigger_id == Trigger.id, Build.status.in_(LIVE_STATUSES))
        .correlate(Trigger)
        .scalar_subquery()
    )
    return select(Trigger.id).where(
        Trigger.account_id == account_id, Trigger.concurrency.is_not(None), out >= Trigger.concurrency
    )


# Built once: an idle poll's look runs this query with its runner's values (no statement built per look).
_CLAIMABLE = (
    Build.runtime_id == bindparam("runtime_id"),
    Build.account_id == bindparam("account_id"),
    Build.status == "queued",
    or_(Build.trigger_id.is_(None), Build.trigger_id.not_in(_busy_triggers(bindparam("account_id")))),
)
_NEXT_QUEUED = select(Build.id, Build.trigger_id).where(*_CLAIMABLE).order_by(Build.created_at, Build.id).limit(2)
_CLAIM = (
    update(_BUILDS)
    .where(_BUILDS.c.id == bindparam("build_id"), _BUILDS.c.status == "queued")
    .values(
        status="claimed",
        runner_id=bindparam("runner_id"),
        lease_id=bindparam("lease_id"),
        claimed_at=bindparam("claimed_at"),
    )
    .returning(*_BUILDS.c)
)


_GIVE_BACK = (
    update(_BUILDS)
    .where(
        _BUILDS.c.id == bindparam("build_id"),
        _BUILDS.c.lease_id == bindparam("held_lease"),
        _BUILDS.c.status == "claimed",
        _BUILDS.c.cancel_requested.is_(False),
    )
    .values(status="queued", runner_id=None, lease_id=None, claimed_at=None)
    .returning(*_BUILDS.c)
)
_END_LEASE = (
    update(_LEASES)
    .where(_LEASES.c.id == bindparam("lease_id"), _LEASES.c.ended_at.is_(None))
    .values(ended_at=bindparam("t"), end_reason=bindparam("why"))
)


async def _trigger_is_busy(session: AsyncSession, trigger_id: str) -> bool:
    limit = await session.scalar(select(Trigger.concurrency).where(Trigger.id == trigger_id).with_for_update())
    if limit is None:
        return False
    out = await session.scalar(
        select(func.count(Build.id)).where(Build.trigger_id == trigger_id, Build.status.in_(LIVE_STATUSES))
    )
    return (out or 0) >= limit


async def cancel_pending_for(session: AsyncSession, runner: Runner, build_ids: list[str]) -> list[str]:
    """Of the builds a runner says it runs, those whose cancel was requested."""
    if not build_ids:
        return []
    rows = await session.scalars(
        select(Build.id).where(
            Build.id.in_(build_ids),
            Build.runner_id == runner.id,
            Build.cancel_requested.is_(True),
            Build.status.in_(LIVE_STATUSES),
        )
    )
    return list(rows)


@dataclass
class Held:
    """A build and the lease through which a runner acts on it."""

    build: Build
    lease: Lease


async def hold(session: AsyncSession, build_id: str, lease_id: str, job_token: str) -> Held:
    """Authenticates a build-scoped call. 401 for a wrong token, or one of a revoked runner (void whatever state
    its lease is in, so the runner stops rather than treating it as a lost lease); the fencing checks come after.

    The runner's revocation is read with the lease, in one query: its lease's end_reason would not do, as a
    revocation ends only live leases, and one that had expired before it still takes late log."""
    found = (await session.execute(_HOLD, {"lease_id": lease_id})).one_or_none()
    build, lease = _held_rows(found, build_id, job_token)
    return Held(_loaded(session, Build, build), _loaded(session, Lease, lease))


def held_of(conn: Connection, build_id: str, lease_id: str, job_token: str) -> Held:
    """`hold` on a synchronous connection, for a caller that writes the build and the lease with Core statements
    (store/reports.py): the objects are read as `hold` reads them but left out of the session (which would cost
    more than the rest of the read), so nothing of them is flushed; they are as current as the caller keeps them."""
    build, lease = _held_rows(conn.execute(_HOLD, {"lease_id": lease_id}).one_or_none(), build_id, job_token)
    return Held(_detached(Build, build), _detached(Lease, lease))


def _held_rows(found: Sequence[Any] | None, build_id: str, job_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if found is None:
        raise Unauthorized("unknown job token or lease for this build")
    lease = dict(zip(_LEASES.c.keys(), found[:_LEASE_WIDTH], strict=True))
    if lease["build_id"] != build_id or lease["job_token_hash"] != token_hash(job_token):
        raise Unauthorized("unknown job token or lease for this build")
    if found[_LEASE_WIDTH] is not None:
        raise Unauthorized("this runner was revoked: its job tokens are void")
    return dict(zip(_BUILDS.c.keys(), found[_LEASE_WIDTH + 1 :], strict=True)), lease


def _detached(model: type[M], values: dict[str, Any]) -> M:
    made: M = inspect(model).class_manager.new_instance()
    made.__dict__.update(values)
    return made


# The lease, its runner's revocation and the build in one Core statement, the rows put in the session as loaded
# (`_loaded`): an ORM query of the lease and a `get` of the build cost a third of a report's CPU.
_HOLD = (
    select(*_LEASES.c, _RUNNERS.c.revoked_at, *_BUILDS.c)
    .join_from(_LEASES, _RUNNERS, _RUNNERS.c.id == _LEASES.c.runner_id)
    .join(_BUILDS, _BUILDS.c.id == _LEASES.c.build_id)
    .where(_LEASES.c.id == bindparam("lease_id"))
)
_LEASE_WIDTH = len(_LEASES.c)


def require_live(held: Held) -> None:
    """Fencing: 409 unless the lease is the build's current one and has not ended. A lease past its
    expiry that the reaper has not ended yet is still live: the reaper alone decides it is lost."""
    build, lease = held.build, held.lease
    if build.lease_id != lease.id:
        raise Conflict("this lease was superseded: another runner owns the build", error="lease_lost")
    if lease.ended_at is not None:
        raise Conflict(f"this lease has ended ({lease.end_reason})", error="lease_lost")


def require_expired_holder(held: Held) -> None:
    """For late log bytes: 409 unless this lease was the build's last one and the build ended because
    it expired (not superseded, finished, revoked or still live), within LATE_LOG_WINDOW."""
    build, lease = held.build, held.lease
    if build.lease_id != lease.id:
        raise Conflict("this lease was superseded: another runner owns the build", error="lease_lost")
    if lease.ended_at is None:
        raise Conflict("this lease is live: send the log in a report", error="lease_live")
    if lease.end_reason != "expired" or build.status not in FINAL_BUILD_STATUSES:
        raise Conflict(f"this lease has ended ({lease.end_reason}): no late log", error="lease_lost")
    if now() - lease.ended_at > LATE_LOG_WINDOW:
        raise Conflict("this lease expired too long ago to hand in its log", error="lease_lost")


def renew(held: Held, lease_ttl: float) -> None:
    """A call through a live lease shows the runner is there: the lease lives `lease_ttl` from now."""
    if held.lease.ended_at is None:
        held.lease.expires_at = now() + lease_ttl


async def heartbeat(session: AsyncSession, held: Held, lease_ttl: float) -> bool:
    require_live(held)
    # The runner's row first, then the lease's (written at commit): the order a revocation locks them in, so the
    # two never deadlock on PostgreSQL.
    await _touch_runner(session, held.lease.runner_id)
    renew(held, lease_ttl)
    return held.build.cancel_requested


async def mark_started(session: AsyncSession, held: Held, message: BuildStarted) -> None:
    require_live(held)
    build = held.build
    existing = {s.name for s in await list_steps(session, build)}  # first: a query would flush what changed before
    if build.status == "claimed":
        build.status = "running"
        build.started_at = now()
    if build.yaml_repo is not None and message.yaml is not None:  # the YAML the runner read from the repository
        build.yaml = message.yaml
        build.yaml_revision = message.yaml_revision
    for position, plan in enumerate(message.steps, start=1):
        if plan.name not in existing:
            _add_step(
                session,
                build,
                plan.name,
                position,
                title=plan.title,
                stage=plan.stage,
                type=plan.type,
                parent=plan.parent,
            )


async def step_for(session: AsyncSession, build: Build, name: str) -> Step:
    """The step row of that name, created on first mention (the system stream, a late plan)."""
    step = await _known_step(session, build, name)
    if step is None:
        step = _add_step(session, build, name, 0 if name.startswith("$") else 10_000)
    return step


def _add_step(session: AsyncSession, build: Build, name: str, position: int, **plan: Any) -> Step:
    """A new step, known to the session's seen map. Not flushed here: it is inserted at commit with what the rest
    of the report sets (its log chunks take its id in the same flush, through LogChunk.step)."""
    # status and log_size are read before that flush, which is what would set their column defaults
    step = Step(build_id=build.id, name=name, position=position, status="pending", log_size=0, **plan)
    session.add(step)
    _seen_steps(session)[(build.id, name)] = step
    return step


async def update_step(session: AsyncSession, held: Held, name: str, update_: StepUpdate) -> Step:
    """Idempotent: a step never moves backwards, and its first final status wins."""
    require_live(held)
    step = await step_for(session, held.build, name)
    if step.status in FINAL_STEP_STATUSES:
        return step
    if update_.status not in FINAL_STEP_STATUSES and STEP_ORDER[update_.status] < STEP_ORDER[step.status]:
        return step
    step.status = update_.status
    for field in ("title", "started_at", "finished_at", "exit_code", "message"):
        value = getattr(update_, field)
        if value is not None:
            setattr(step, field, value)
    return step


async def finish(session: AsyncSession, held: Held, message: BuildFinished) -> Build:
    """Idempotent for the lease that finished the build; fenced for every other."""
    build, lease = held.build, held.lease
    if build.lease_id == lease.id and lease.end_reason == "finished" and build.status == message.status:
        return build
    require_live(held)
    await _finish(session, build, message.status, message.message)
    return build


async def expire_leases(session: AsyncSession, max_requeues: int) -> list[Build]:
    """Ends every lease past its expiry; returns the builds that changed (requeued or lost). Only the
    reaper calls this, and only when the control plane has been available for a whole lease TTL. Of
    several replicas only the jobs' leader reaps; should two ever overlap (a leader cut off from the database
    as another takes over), each ends only the leases it locked (PostgreSQL; SQLite has one writer)."""
    t = now()
    expired = select(Lease).where(Lease.ended_at.is_(None), Lease.expires_at < t)
    leases = await session.scalars(expired.with_for_update(skip_locked=True))
    changed: list[Build] = []
    for lease in leases:
        lease.ended_at, lease.end_reason = t, "expired"
        build = await session.get_one(Build, lease.build_id)
        if build.lease_id != lease.id or build.status not in LIVE_STATUSES:
            continue
        if build.status == "claimed" and not build.cancel_requested and build.requeues < max_requeues:
            build.status, build.runner_id, build.lease_id = "queued", None, None
            build.requeues += 1
        elif build.status == "claimed" and build.cancel_requested:
            await _finish(session, build, "terminated", "cancelled before it started")
        else:
            await _finish(session, build, "error", "runner lost")
        changed.append(build)
    return changed


async def end_leases_of(session: AsyncSession, runner: Runner) -> list[Build]:
    """Revocation fences at once: every live lease of the runner ends in the caller's transaction. A build it had
    started ends `error` "runner revoked"; one it never started goes back to the queue, as the reaper would do
    (nothing of it ran). Returns the builds that changed."""
    t = now()
    leases = await session.scalars(select(Lease).where(Lease.runner_id == runner.id, Lease.ended_at.is_(None)))
    changed: list[Build] = []
    for lease in list(leases):
        lease.ended_at, lease.end_reason = t, "runner revoked"
        build = await session.get_one(Build, lease.build_id)
        if build.lease_id != lease.id or build.status not in LIVE_STATUSES:
            continue
        if build.status == "claimed" and build.cancel_requested:
            await _finish(session, build, "terminated", "cancelled before it started")
        elif build.status == "claimed":
            build.status, build.runner_id, build.lease_id = "queued", None, None
            build.requeues += 1
        else:
            await _finish(session, build, "error", "runner revoked")
        changed.append(build)
    return changed


async def _finish(session: AsyncSession, build: Build, status: str, message: str | None) -> None:
    t = now()
    build.status, build.message, build.finished_at = status, message, t
    if build.lease_id:
        lease = await session.get(Lease, build.lease_id)
        if lease is not None and lease.ended_at is None:
            lease.ended_at, lease.end_reason = t, "finished"
    for step in await list_steps(session, build):
        if step.status == "pending":
            step.status = "skipped"
        elif step.status == "running":
            step.status = "terminated" if status == "terminated" else "error"
            step.finished_at = t
            step.message = step.message or message


async def _touch_runner(session: AsyncSession, runner_id: str) -> None:
    await session.execute(update(Runner).where(Runner.id == runner_id).values(last_seen_at=now()))


async def find_step(session: AsyncSession, build: Build, name: str) -> Step:
    step = await _known_step(session, build, name)
    if step is None:
        raise NotFound(f"build {build.id} has no step {name!r}")
    return step
