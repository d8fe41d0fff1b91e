"""Pipeline pages: the list, one pipeline (its YAML or where it is read from, variables, triggers, builds, and a
form to run it), and the create/edit form: YAML validated on the server with every problem shown at its line, or
a repository to read it from, checked by the store's own rules with each refusal shown at its field."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, TypedDict

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid, NotFound, PipelineError, Problem
from outpost.pipelines.parsing import load_pipeline
from outpost.server.api.schemas.builds import BuildIn
from outpost.server.api.schemas.pipelines import PipelineIn, PipelinePatch
from outpost.server.dispatch import runtime_key
from outpost.server.models import Build, Integration, Pipeline, Runtime
from outpost.server.store import approvals, builds, integrations, pipelines, runtimes
from outpost.server.store import triggers as trigger_store
from outpost.server.store.accounts import DEVELOPER, Principal, require
from outpost.server.store.builds import LIVE_STATUSES
from outpost.server.store.pipelines import MAX_YAML
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.runtimes import idle_runtimes
from outpost.server.ui.sessions import Form, Viewer, as_viewer, check_csrf, checked, read_form, services
from outpost.wire import FINAL_BUILD_STATUSES

router = APIRouter(route_class=UiRoute, include_in_schema=False)
# Runs as it is, with or without a branch (an unset `${{CF_BRANCH}}` stays literal, and sh refuses it).
STARTER = """version: '1.0'
steps:
  hello:
    title: Say hello
    image: alpine:3.20
    commands:
      - echo "Hello from ${{CF_PIPELINE_NAME}}, build ${{CF_BUILD_ID}}"
"""


class Source(TypedDict, total=False):
    """Where a pipeline's YAML comes from, as the API's schemas and the store's functions take it."""

    yaml: str
    yaml_file: str
    repo: str
    git: str | None
    revision: str | None


@dataclass
class Draft:
    """What the form holds, and what is wrong with it."""

    name: str = ""
    runtime: str = ""
    source: str = "inline"  # "inline": the YAML kept here; "repo": read from a repository at build time
    yaml_file: str = "codefresh.yml"
    yaml: str = STARTER
    repo: str = ""
    git: str = ""  # "": the account's default git integration
    path: str = "codefresh.yml"
    revision: str = ""  # "": the build's branch, else the repository's default branch
    variables: str = ""
    secrets: str = ""  # new or replaced secret values, KEY=VALUE per line
    kept_secrets: list[str] = field(default_factory=list)  # existing secret names (edit)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # tolerated (typos, most likely): saved anyway
    errors: list[str] = field(default_factory=list)
    field_errors: dict[str, str] = field(default_factory=dict)  # form field -> why the store refused it

    @property
    def from_repo(self) -> bool:
        return self.source == "repo"

    @property
    def failed(self) -> bool:
        return bool(self.problems or self.errors or self.field_errors)

    @property
    def bad_lines(self) -> dict[int, str]:
        lines: dict[int, str] = {}
        for p in self.problems:
            lines[p.line] = f"{lines[p.line]}; {p.message}" if p.line in lines else p.message
        return lines

    @property
    def warned_lines(self) -> dict[int, str]:
        return {w.line: w.message for w in self.warnings}

    def source_line(self, number: int) -> str:
        lines = self.yaml.split("\n")
        return lines[number - 1] if 0 < number <= len(lines) else ""

    def source_fields(self) -> Source:
        """The chosen source's fields; the other field set is ignored."""
        if self.from_repo:
            return {
                "repo": self.repo,
                "git": self.git or None,
                "revision": self.revision or None,
                "yaml_file": self.path,
            }
        return {"yaml": self.yaml, "yaml_file": self.yaml_file}


@dataclass
class Choices:
    """What the form's selects offer: this account's runtimes and git integrations, nobody else's."""

    runtimes: list[str]
    gits: list[Integration]
    default_runtime: str = ""  # what a new pipeline runs on unless another is chosen
    idle: set[str] = field(default_factory=set)  # runtimes with no runner online

    def runtime_of(self, draft: Draft) -> str:
        return draft.runtime or self.default_runtime

    @property
    def default_git(self) -> Integration | None:
        return next((g for g in self.gits if g.is_default), None)


def parse_pairs(text: str, what: str) -> tuple[dict[str, str], list[str]]:
    """KEY=VALUE per line; blank lines and lines starting with # are skipped."""
    values: dict[str, str] = {}
    errors: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or not key.strip():
            errors.append(f"{what}, line {number}: write KEY=VALUE")
            continue
        values[key.strip()] = value
    return values, errors


def validate(draft: Draft) -> None:
    if len(draft.yaml.encode()) > MAX_YAML:
        draft.errors.append(f"the pipeline file is larger than {MAX_YAML // 1024} KiB")
        return
    try:
        draft.warnings = load_pipeline(draft.yaml, draft.yaml_file or "codefresh.yml").warnings
    except PipelineError as exc:
        draft.problems = exc.problems


def check_schema(draft: Draft, model: type[PipelineIn | PipelinePatch], **values: object) -> None:
    """The API's own request schema, so the form has the API's limits."""
    try:
        checked(model, **values, **draft.source_fields())
    except Invalid as exc:
        if not (draft.from_repo and not draft.repo):  # an empty repository: said at its field by check_source
            draft.errors.append(exc.message)


async def check_source(session: AsyncSession, principal: Principal, draft: Draft) -> None:
    """The store's own checks of a repository source (names only: nothing is contacted)."""
    try:
        await pipelines.check_source(
            session, principal, draft.repo, draft.git or None, draft.path, draft.revision or None
        )
    except Invalid as exc:
        name = exc.details.get("field")
        if not isinstance(name, str):
            draft.errors.append(exc.message)
        else:
            draft.field_errors[name] = exc.message


async def check_draft(session: AsyncSession, principal: Principal, draft: Draft) -> None:
    if draft.from_repo:
        await check_source(session, principal, draft)
    else:
        validate(draft)


def _draft_of(form: Form) -> Draft:
    return Draft(
        name=form.get("name").strip(),
        runtime=form.get("runtime"),
        source="repo" if form.get("source") == "repo" else "inline",
        yaml_file=form.get("yaml_file").strip() or "codefresh.yml",
        yaml=form.get("yaml"),
        repo=form.get("repo").strip(),
        git=form.get("git").strip(),
        path=form.get("path").strip() or "codefresh.yml",
        revision=form.get("revision").strip(),
        variables=form.get("variables"),
        secrets=form.get("secrets"),
    )


def _pairs_text(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


async def _choices(request: Request, session: AsyncSession, principal: Principal) -> Choices:
    every = await runtimes.list_runtimes(session, principal)
    return Choices(
        runtimes=[r.name for r in every],
        gits=await integrations.list_integrations(session, principal, kind="git"),
        default_runtime=next((r.name for r in every if r.is_default), every[0].name if every else ""),
        idle=await idle_runtimes(services(request), session, principal),
    )


async def _viewer_choices(request: Request) -> tuple[Viewer, Choices]:
    async with as_viewer(request) as (session, viewer):
        return viewer, await _choices(request, session, viewer.principal)


def _form_page(request: Request, viewer: Viewer, draft: Draft, choices: Choices, *, editing: bool) -> Response:
    status = 422 if draft.failed else 200
    if draft.secrets.strip():  # secret values are not sent back to the browser
        draft.secrets = ""
        draft.errors.append("Secret values are not kept when the form comes back: enter them again.")
    return page(request, "pipeline_form.html", viewer, status_code=status, d=draft, c=choices, editing=editing)


def _pairs(draft: Draft) -> tuple[dict[str, str], dict[str, str]]:
    variables, errors = parse_pairs(draft.variables, "Variables")
    secrets, secret_errors = parse_pairs(draft.secrets, "Secret variables")
    draft.errors += errors + secret_errors
    return variables, secrets


RECENT = 20  # builds a pipeline's sparkline, success rate and median duration are taken over


@dataclass
class Recent:
    """A pipeline's last builds, oldest first, and what they say."""

    builds: list[Build]

    @property
    def last(self) -> Build | None:
        return self.builds[-1] if self.builds else None

    @property
    def finished(self) -> list[Build]:
        return [b for b in self.builds if b.status in FINAL_BUILD_STATUSES]

    @property
    def succeeded(self) -> int:
        return sum(b.status == "success" for b in self.finished)

    @property
    def median_duration(self) -> float | None:
        took = [
            b.finished_at - b.started_at
            for b in self.finished
            if b.status == "success" and b.started_at is not None and b.finished_at is not None
        ]
        return statistics.median(took) if took else None


@router.get("/pipelines")
async def pipeline_list(request: Request) -> Response:
    async with as_viewer(request) as (session, viewer):
        rows = await pipelines.list_pipelines(session, viewer.principal)
        names = {r.id: r.name for r in await runtimes.list_runtimes(session, viewer.principal)}
        recent: dict[str, Recent] = {}
        for p in rows:  # one query each: a busy pipeline does not crowd the others out
            newest = await builds.list_builds(session, viewer.principal, pipeline=p.name, limit=RECENT)
            recent[p.id] = Recent(newest[::-1])
        live = [r.last.id for r in recent.values() if r.last and r.last.status in LIVE_STATUSES]
        waiting = await approvals.waiting_for_approval(session, live)
    return page(
        request,
        "pipelines.html",
        viewer,
        pipelines=rows,
        runtimes=names,
        recent=recent,
        window=RECENT,
        shown=lambda b: "pending-approval" if b.id in waiting else b.status,
    )


@router.get("/new/pipeline")
async def new_pipeline(request: Request) -> Response:
    viewer, choices = await _viewer_choices(request)
    require(viewer.principal, DEVELOPER)
    return _form_page(request, viewer, Draft(), choices, editing=False)


@router.post("/new/pipeline")
async def create_pipeline(request: Request) -> Response:
    """Nothing is stored unless the whole form is valid; otherwise the form comes back with the problems."""
    form = await read_form(request)
    draft = _draft_of(form)
    viewer, choices = await _viewer_choices(request)
    check_csrf(viewer, form)
    require(viewer.principal, DEVELOPER)
    variables, secrets = _pairs(draft)
    check_schema(draft, PipelineIn, name=draft.name, variables=variables, secrets=secrets)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            await check_draft(session, viewer.principal, draft)
            if draft.failed:
                return _form_page(request, viewer, draft, choices, editing=False)
            await pipelines.create_pipeline(
                session,
                viewer.principal,
                name=draft.name,
                runtime=draft.runtime or None,
                variables=variables,
                sealed_secrets=svc.secrets.seal_all(secrets),
                **draft.source_fields(),
            )
    except (Invalid, Conflict, NotFound) as exc:
        draft.errors.append(exc.message)
        return _form_page(request, viewer, draft, choices, editing=False)
    return see_other(f"/pipelines/{draft.name}")


@router.get("/pipelines/{name}")
async def pipeline_page(request: Request, name: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        pipeline = await pipelines.get_pipeline(session, viewer.principal, name)
        runtime = await session.get_one(Runtime, pipeline.runtime_id)
        recent = await builds.list_builds(session, viewer.principal, pipeline=name, limit=20)
        triggers = [t for t, _ in await trigger_store.list_triggers(session, viewer.principal, name)]
        git = await _source_integration(session, viewer.principal, pipeline)
    return page(
        request,
        "pipeline.html",
        viewer,
        warnings=_warnings(pipeline),
        p=pipeline,
        runtime=runtime.name,
        builds=recent,
        triggers=triggers,
        git=git,
        public_url=services(request).public_url,
    )


def _warnings(p: Pipeline) -> list[Problem]:
    if p.repo:
        return []  # read at build time; its build log says them
    try:
        return load_pipeline(p.yaml, p.yaml_file).warnings
    except PipelineError:
        return []  # stored before a stricter check: the build log says why


async def _source_integration(session: AsyncSession, principal: Principal, p: Pipeline) -> Integration | None:
    """The git integration a repository-backed pipeline reads its YAML through: the named one or the default."""
    if not p.repo:
        return None
    if p.git:
        return await integrations.find_integration(session, principal.account_id, "git", p.git)
    return await integrations.default_integration(session, principal.account_id, "git")


@router.get("/pipelines/{name}/edit")
async def edit_pipeline(request: Request, name: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, DEVELOPER)
        p = await pipelines.get_pipeline(session, viewer.principal, name)
        runtime = await session.get_one(Runtime, p.runtime_id)
        choices = await _choices(request, session, viewer.principal)
    draft = _draft_from(p, runtime.name)
    if not draft.from_repo:
        validate(draft)  # its warnings, shown where it is edited
    return _form_page(request, viewer, draft, choices, editing=True)


def _draft_from(p: Pipeline, runtime: str) -> Draft:
    return Draft(
        name=p.name,
        runtime=runtime,
        source="repo" if p.repo else "inline",
        yaml_file=p.yaml_file,
        yaml=p.yaml,
        repo=p.repo or "",
        git=p.git or "",
        path=p.yaml_file,
        revision=p.revision or "",
        variables=_pairs_text(p.variables),
        kept_secrets=sorted(p.secrets),
    )


@router.post("/pipelines/{name}/edit")
async def update_pipeline(request: Request, name: str) -> Response:
    form = await read_form(request)
    draft = _draft_of(form)
    draft.name = name
    dropped = set(form.all("drop_secret"))
    viewer, choices = await _viewer_choices(request)
    check_csrf(viewer, form)
    require(viewer.principal, DEVELOPER)
    variables, secrets = _pairs(draft)
    check_schema(draft, PipelinePatch, variables=variables, secrets=secrets)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            p = await pipelines.get_pipeline(session, viewer.principal, name)
            draft.kept_secrets = sorted(p.secrets)
            await check_draft(session, viewer.principal, draft)
            if draft.failed:
                return _form_page(request, viewer, draft, choices, editing=True)
            sealed = {k: v for k, v in p.secrets.items() if k not in dropped and k not in secrets}
            sealed.update(svc.secrets.seal_all(secrets))
            await pipelines.update_pipeline(
                session,
                viewer.principal,
                name,
                runtime=draft.runtime or None,
                variables=variables,
                sealed_secrets=sealed,
            )
            await _save_source(session, viewer.principal, p, draft)
    except (Invalid, Conflict) as exc:
        draft.errors.append(exc.message)
        return _form_page(request, viewer, draft, choices, editing=True)
    return see_other(f"/pipelines/{name}")


async def _save_source(session: AsyncSession, principal: Principal, p: Pipeline, draft: Draft) -> None:
    """Where the YAML comes from, through the store's update (which checks it again)."""
    if draft.from_repo:
        # An emptied integration or revision ("") goes back to the default.
        await pipelines.update_pipeline(
            session, principal, p.name, repo=draft.repo, git=draft.git, revision=draft.revision, yaml_file=draft.path
        )
        return
    await pipelines.update_pipeline(session, principal, p.name, yaml=draft.yaml, yaml_file=draft.yaml_file)


@router.post("/pipelines/{name}/run")
async def run_pipeline(request: Request, name: str) -> Response:
    form = await read_form(request)
    variables, errors = parse_pairs(form.get("variables"), "Variables")
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, DEVELOPER)
        if errors:
            raise Invalid("; ".join(errors))
        run = checked(
            BuildIn, variables=variables, branch=form.get("branch").strip() or None, sha=form.get("sha").strip() or None
        )
        pipeline = await pipelines.get_pipeline(session, viewer.principal, name)
        build = await builds.create_build(
            session, viewer.principal, pipeline, variables=run.variables, branch=run.branch, sha=run.sha
        )
    services(request).wakeups.notify(runtime_key(build.runtime_id))
    return see_other(f"/builds/{build.id}")
