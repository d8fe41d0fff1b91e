"""Build pages: the live list, one build with its steps and a step's log, and what a user does to a
build (cancel, restart, approve or deny a waiting step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import NotFound
from outpost.server.artifactfiles import files_of
from outpost.server.dispatch import runtime_key
from outpost.server.models import Artifact, Build, Pipeline, Runtime, Step
from outpost.server.services import Services
from outpost.server.store import approvals, artifacts, builds, pipelines, runtimes, testreports
from outpost.server.store.accounts import DEVELOPER, Principal, require
from outpost.server.ui import logview
from outpost.server.ui.graph import graph_of
from outpost.server.ui.rendering import FINAL, UiRoute, can_for, page, render_fragment, see_other
from outpost.server.ui.runtimes import idle_runtimes
from outpost.server.ui.sessions import Viewer, as_viewer, check_csrf, read_form, services
from outpost.wire import FINAL_BUILD_STATUSES, SYSTEM_STREAM

router = APIRouter(route_class=UiRoute, include_in_schema=False)
WAITING = "pending-approval"  # not a build status in the store: a running build with a step waiting for a person
STATUSES = ("queued", "claimed", "running", WAITING, "success", "failure", "error", "terminated")
LIST_LIMIT = 100
TRIGGERS = ("build", "webhook", "cron")  # how a build was started (store/builds.py create_build's callers)


def shown_status(step: Step) -> str:
    """A step's status as people should see it: its log can arrive before the update that says it runs."""
    return "running" if step.status == "pending" and step.log_size else step.status


@dataclass
class StepRow:
    step: Step
    depth: int

    @property
    def status(self) -> str:
        return shown_status(self.step)


@dataclass
class Stage:
    name: str
    rows: list[StepRow]


def stages(steps: list[Step]) -> list[Stage]:
    """Steps grouped by stage in plan order; a parallel step's children under it (with its stage)."""
    by_name = {s.name: s for s in steps}

    def stage_of(step: Step, depth: int = 0) -> str:
        if step.stage or not step.parent or step.parent not in by_name or depth > 20:
            return step.stage or ""
        return stage_of(by_name[step.parent], depth + 1)

    groups: dict[str, Stage] = {}
    for step in steps:
        if step.name == SYSTEM_STREAM:
            continue
        name = stage_of(step)
        groups.setdefault(name, Stage(name, [])).rows.append(StepRow(step, 1 if step.parent else 0))
    return list(groups.values())


def active_step(steps: list[Step]) -> Step | None:
    """The step a build page opens on: one waiting for a person, running, failed, or the last that ran."""
    real = [s for s in steps if s.name != SYSTEM_STREAM and s.type != "parallel"]
    for wanted in ("pending-approval", "running"):
        found = next((s for s in real if shown_status(s) == wanted), None)
        if found is not None:
            return found
    failed = next((s for s in real if s.status in ("failure", "error")), None)
    if failed is not None:
        return failed
    ran = [s for s in real if s.log_size or s.started_at]
    if ran:
        return ran[-1]
    system = next((s for s in steps if s.name == SYSTEM_STREAM), None)
    return system if system is not None and system.log_size else (real[0] if real else system)


async def runner_names(session: AsyncSession, who: Principal) -> dict[str, str]:
    return {r.id: r.name for r in await runtimes.list_runners(session, who)}


@dataclass
class BuildRows:
    """The builds a list shows, and which of them wait for an approval answer."""

    builds: list[Build]
    waiting: set[str]

    def status(self, build: Build) -> str:
        return WAITING if build.id in self.waiting else build.status


def list_context(rows: BuildRows, names: dict[str, str]) -> dict[str, Any]:
    return {"builds": rows.builds, "rows": rows, "runners": names}


@dataclass(frozen=True)
class ListQuery:
    """The builds list's filters, search and page, as its form and its live stream take them."""

    pipeline: str = ""
    status: str = ""
    branch: str = ""
    trigger: str = ""
    author: str = ""
    q: str = ""
    before: str = ""  # a build id: the page after it (no live updates there)

    def filter(self) -> builds.BuildFilter:
        return builds.BuildFilter(
            pipeline=self.pipeline or None,
            status=self.status or None,
            branch=self.branch or None,
            trigger=self.trigger or None,
            author=self.author or None,
            search=self.q.strip() or None,
        )

    def params(self, **changes: str) -> str:
        """The query string of this list (without its page), with `changes`."""
        values = {**{k: v for k, v in self.__dict__.items() if k != "before"}, **changes}
        return urlencode({k: v for k, v in values.items() if v})


Text = Annotated[str, Query(max_length=255)]


def list_query(
    pipeline: Text = "",
    status: Text = "",
    branch: Text = "",
    trigger: Text = "",
    author: Text = "",
    q: Text = "",
    before: Annotated[str, Query(max_length=32)] = "",
) -> ListQuery:
    return ListQuery(pipeline, status, branch, trigger, author, q, before)


async def build_rows(session: AsyncSession, who: Principal, asked: ListQuery) -> BuildRows:
    if asked.status == WAITING:
        found = await approvals.list_waiting(session, who, pipeline=asked.pipeline or None, limit=LIST_LIMIT)
        return BuildRows(found, {b.id for b in found})
    found = await builds.list_builds(session, who, where=asked.filter(), before=asked.before or None, limit=LIST_LIMIT)
    waiting = await approvals.waiting_for_approval(session, [b.id for b in found if b.status in builds.LIVE_STATUSES])
    if asked.status == "running":  # those show as waiting, and have their own filter
        found = [b for b in found if b.id not in waiting]
    return BuildRows(found, waiting)


@router.get("/")
async def home() -> Response:
    return see_other("/builds")


@router.get("/builds")
async def build_list(request: Request, asked: Annotated[ListQuery, Depends(list_query)]) -> Response:
    async with as_viewer(request) as (session, viewer):
        rows = await build_rows(session, viewer.principal, asked)
        names = await runner_names(session, viewer.principal)
        all_pipelines = [p.name for p in await pipelines.list_pipelines(session, viewer.principal)]
    full = len(rows.builds) == LIST_LIMIT and asked.status != WAITING
    return page(
        request,
        "builds.html",
        viewer,
        asked=asked,
        pipeline=asked.pipeline,
        status=asked.status,
        statuses=STATUSES,
        triggers=TRIGGERS,
        pipelines=all_pipelines,
        older=asked.params(before=rows.builds[-1].id) if full else None,
        **list_context(rows, names),
    )


@dataclass
class BuildView:
    """Everything a build page and its live updates render."""

    build: Build
    steps: list[Step]
    stages: list[Stage]
    system: Step | None
    active: Step | None
    runner: str
    runtime: str = ""
    idle: bool = False  # its runtime has no runner online
    approvers: str = ""  # who may answer its approval steps
    restarted: Build | None = None  # the build this one restarted, if it is still there
    restarts: list[Build] = field(default_factory=list)  # the builds that restarted this one
    tests: testreports.Summary | None = None  # its steps' JUnit reports, failures first
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def restartable_from_failed(self) -> bool:
        return self.build.status in builds.FAILED_BUILD_STATUSES

    @property
    def waiting(self) -> list[Step]:
        """Steps waiting for a person's answer, while the build runs."""
        if self.build.status not in builds.LIVE_STATUSES:
            return []
        return [s for s in self.steps if s.type == WAITING and s.status == WAITING and not s.decision]

    @property
    def status(self) -> str:
        return WAITING if self.waiting else self.build.status

    @property
    def answered(self) -> list[Step]:
        """Approval steps a person answered, with who."""
        return [s for s in self.steps if s.type == WAITING and s.decision]

    def fragments(self, viewer: Viewer, selected: str | None) -> dict[str, str]:
        context = {"v": self, "csrf": viewer.csrf, "selected": selected, "can": can_for(viewer)}
        return {
            "header": render_fragment("_build_header.html", **context),
            "steps": render_fragment("_steps.html", **context),
            "outputs": render_fragment("_outputs.html", **context),
        }


async def build_view(svc: Services, session: AsyncSession, who: Principal, build_id: str) -> BuildView:
    build = await builds.get_build(session, who, build_id)
    steps = await builds.list_steps(session, build)
    names = await runner_names(session, who) if build.runner_id else {}
    runner = names.get(build.runner_id or "", build.runner_id[:8] if build.runner_id else "")
    system = next((s for s in steps if s.name == SYSTEM_STREAM), None)
    view = BuildView(build, steps, stages(steps), system, active_step(steps), runner)
    runtime = await session.get(Runtime, build.runtime_id)
    view.runtime = runtime.name if runtime else ""
    if build.status == "queued":
        view.idle = view.runtime in await idle_runtimes(svc, session, who)
    if build.restarted_from:
        old = await session.get(Build, build.restarted_from)
        view.restarted = old if old is not None and old.account_id == build.account_id else None
    if view.waiting:
        view.approvers = approvals.who_may_answer(await session.get(Pipeline, build.pipeline_id), build)
    view.restarts = await builds.restarts_of(session, build)
    return view


async def outputs_of(session: AsyncSession, view: BuildView) -> None:
    """What the steps left for the page (test cases, artifacts): read for the page and for each live update."""
    view.tests = await testreports.summary(session, view.build)
    view.artifacts = await artifacts.list_for(session, view.build)


@router.get("/pipelines/{name}/builds/{number}")
async def build_by_number(request: Request, name: str, number: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> Response:
    """`/pipelines/my-app/builds/42`: the page of build #42 of my-app (a line anchor survives the redirect)."""
    async with as_viewer(request) as (session, viewer):
        pipeline = await pipelines.get_pipeline(session, viewer.principal, name)
        build = await builds.get_build_by_number(session, viewer.principal, pipeline, number)
    query = f"?{request.url.query}" if request.url.query else ""
    return see_other(f"/builds/{build.id}{query}")


@router.get("/builds/{build_id}")
async def build_page(
    request: Request,
    build_id: str,
    step: str | None = None,
    start: Annotated[int | None, Query(ge=1)] = None,
    q: Annotated[str, Query(max_length=200)] = "",
    scope: str = "",
) -> Response:
    everywhere: list[StepHits] = []
    async with as_viewer(request) as (session, viewer):
        view = await build_view(services(request), session, viewer.principal, build_id)
        await outputs_of(session, view)
        chosen = view.active if step is None else next((s for s in view.steps if s.name == step), None)
        if step is not None and chosen is None:
            raise NotFound(f"build {build_id} has no step {step!r}")
        data = await logview.read(session, chosen) if chosen is not None else b""
        cursor = await logview.cursor_now(session, view.build)
        if q and scope == "all":
            everywhere = await search_steps(session, view.steps, q)
    build_done = view.build.status in FINAL_BUILD_STATUSES
    step_done = build_done or (chosen is not None and chosen.status in FINAL)
    window = logview.window(data, step_done, start)
    hits, more = logview.search(data, q) if q and scope != "all" else ([], False)
    live = ""
    if not build_done:
        follow: dict[str, object] = {"cursor": cursor}
        if chosen is not None and window.at_end:
            follow.update(step=chosen.name, offset=window.offset, line=window.first + window.shown)
        live = f"/ui/events/builds/{view.build.id}?{urlencode(follow)}"
    return page(
        request,
        "build.html",
        viewer,
        v=view,
        chosen=chosen,
        auto=step is None,
        window=window,
        q=q,
        scope=scope,
        everywhere=everywhere,
        more_everywhere=sum(len(h.hits) for h in everywhere) >= logview.SEARCH_LIMIT,
        hits=hits,
        more_hits=more,
        live=live,
        page_size=logview.PAGE,
        fragments=view.fragments(viewer, chosen.name if chosen else None),
        graph=graph_of(view.build, view.steps),
    )


@dataclass
class StepHits:
    step: Step
    hits: list[logview.Hit]


async def search_steps(session: AsyncSession, steps: list[Step], q: str) -> list[StepHits]:
    """Every step's lines with `q`, in plan order (the build's own log first), at most SEARCH_LIMIT in all."""
    found: list[StepHits] = []
    left = logview.SEARCH_LIMIT
    for s in sorted(steps, key=lambda s: s.name != SYSTEM_STREAM):
        if not s.log_size or left <= 0:
            continue
        hits, _ = logview.search(await logview.read(session, s), q, left)
        if hits:
            found.append(StepHits(s, hits))
            left -= len(hits)
    return found


@router.get("/ui/builds/{build_id}/steps/{step}/lines")
async def log_lines(
    request: Request,
    build_id: str,
    step: str,
    start: Annotated[int, Query(ge=1)] = 1,
    count: Annotated[int, Query(ge=1, le=5000)] = logview.PAGE,
) -> Response:
    """A window of a step's log as HTML lines, for the page's "earlier lines" button."""
    async with as_viewer(request) as (session, viewer):
        build = await builds.get_build(session, viewer.principal, build_id)
        row = await builds.find_step(session, build, step)
        data = await logview.read(session, row)
    window = logview.window(data, True, start, count)
    return Response(
        str(window.html), media_type="text/html; charset=utf-8", headers={"Outpost-First": str(window.first)}
    )


@router.get("/builds/{build_id}/steps/{step}/log.txt")
async def download(request: Request, build_id: str, step: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        build = await builds.get_build(session, viewer.principal, build_id)
        row = await builds.find_step(session, build, step)
        data = await logview.read(session, row)
    name = f"{build.pipeline_name}-{build.number}-{step.lstrip('$')}.log"
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/builds/{build_id}/cancel")
async def cancel(request: Request, build_id: str) -> Response:
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, DEVELOPER)
        build = await builds.request_cancel(session, viewer.principal, build_id)
    services(request).wakeups.build_changed(build)
    return see_other(f"/builds/{build.id}")


@router.post("/builds/{build_id}/restart")
async def restart(request: Request, build_id: str) -> Response:
    """A new build of the same pipeline with the same branch, commit and variables; `from_failed` (the button on
    a failed build) skips the steps that succeeded where the runner still holds the build's volume."""
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, DEVELOPER)
        old = await builds.get_build(session, viewer.principal, build_id)
        pipeline = await pipelines.get_pipeline(session, viewer.principal, old.pipeline_name)
        build = await builds.restart_build(
            session, viewer.principal, old, pipeline, from_failed=form.get("from_failed") == "1"
        )
    services(request).wakeups.notify(runtime_key(build.runtime_id))
    return see_other(f"/builds/{build.id}")


@router.get("/builds/{build_id}/artifacts/{artifact_id}")
async def artifact(request: Request, build_id: str, artifact_id: str) -> Response:
    """An artifact's download link on the build page (viewer), as an attachment."""
    async with as_viewer(request) as (session, viewer):
        build = await builds.get_build(session, viewer.principal, build_id)
        row = await artifacts.get(session, build, artifact_id)
    return files_of(services(request).settings).response(row)


@router.post("/builds/{build_id}/steps/{step}/{decision}")
async def answer(request: Request, build_id: str, step: str, decision: str) -> Response:
    """Approve or deny a waiting step; the runner's open poll hands the answer over at once."""
    form = await read_form(request)
    if decision not in ("approve", "deny"):
        raise NotFound(f"no action {decision!r}")
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, DEVELOPER)
        await approvals.decide(
            session, viewer.principal, build_id, step, "approved" if decision == "approve" else "denied"
        )
        build = await builds.get_build(session, viewer.principal, build_id)
    services(request).wakeups.build_changed(build)
    return see_other(f"/builds/{build.id}?step={step}")
