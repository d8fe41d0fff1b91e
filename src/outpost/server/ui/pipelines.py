"""Pipeline pages: the list, one pipeline (its YAML, variables, triggers, builds, and a form to run it),
and the create/edit form whose YAML is validated on the server with every problem shown at its line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response

from outpost.errors import Conflict, Invalid, NotFound, PipelineError, Problem
from outpost.pipelines.parsing import load_pipeline
from outpost.server.api.schemas import BuildIn, PipelineIn, PipelinePatch
from outpost.server.dispatch import runtime_key
from outpost.server.models import Build, Pipeline, Runtime
from outpost.server.store import builds, pipelines, runtimes
from outpost.server.store import triggers as trigger_store
from outpost.server.store.pipelines import MAX_YAML
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.sessions import Form, Viewer, as_viewer, check_csrf, checked, read_form, services

router = APIRouter(route_class=UiRoute, include_in_schema=False)
STARTER = """version: '1.0'
steps:
  hello:
    title: Say hello
    image: alpine:3.20
    commands:
      - echo "Hello from ${{CF_PIPELINE_NAME}} on ${{CF_BRANCH}}"
"""


@dataclass
class Draft:
    """What the form holds, and what is wrong with it."""

    name: str = ""
    runtime: str = ""
    yaml_file: str = "codefresh.yml"
    yaml: str = STARTER
    variables: str = ""
    secrets: str = ""  # new or replaced secret values, KEY=VALUE per line
    kept_secrets: list[str] = field(default_factory=list)  # existing secret names (edit)
    problems: list[Problem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def bad_lines(self) -> dict[int, str]:
        lines: dict[int, str] = {}
        for p in self.problems:
            lines[p.line] = f"{lines[p.line]}; {p.message}" if p.line in lines else p.message
        return lines

    def source_line(self, number: int) -> str:
        lines = self.yaml.split("\n")
        return lines[number - 1] if 0 < number <= len(lines) else ""


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
        load_pipeline(draft.yaml, draft.yaml_file or "codefresh.yml")
    except PipelineError as exc:
        draft.problems = exc.problems


def _draft_of(form: Form) -> Draft:
    return Draft(
        name=form.get("name").strip(),
        runtime=form.get("runtime"),
        yaml_file=form.get("yaml_file").strip() or "codefresh.yml",
        yaml=form.get("yaml"),
        variables=form.get("variables"),
        secrets=form.get("secrets"),
    )


def _pairs_text(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


async def _runtime_names(request: Request) -> tuple[Viewer, list[str]]:
    async with as_viewer(request) as (session, viewer):
        return viewer, [r.name for r in await runtimes.list_runtimes(session, viewer.principal)]


def _form_page(request: Request, viewer: Viewer, draft: Draft, names: list[str], *, editing: bool) -> Response:
    status = 422 if draft.problems or draft.errors else 200
    if draft.secrets.strip():  # secret values are not sent back to the browser
        draft.secrets = ""
        draft.errors.append("Secret values are not kept when the form comes back: enter them again.")
    return page(request, "pipeline_form.html", viewer, status_code=status, d=draft, runtimes=names, editing=editing)


@router.get("/pipelines")
async def pipeline_list(request: Request) -> Response:
    async with as_viewer(request) as (session, viewer):
        rows = await pipelines.list_pipelines(session, viewer.principal)
        names = {r.id: r.name for r in await runtimes.list_runtimes(session, viewer.principal)}
        latest: dict[str, Build] = {}
        for b in await builds.list_builds(session, viewer.principal, limit=500):
            latest.setdefault(b.pipeline_id, b)
    return page(request, "pipelines.html", viewer, pipelines=rows, runtimes=names, latest=latest)


@router.get("/new/pipeline")
async def new_pipeline(request: Request) -> Response:
    viewer, names = await _runtime_names(request)
    return _form_page(request, viewer, Draft(), names, editing=False)


@router.post("/new/pipeline")
async def create_pipeline(request: Request) -> Response:
    """Nothing is stored unless the whole form is valid; otherwise the form comes back with the problems."""
    form = await read_form(request)
    draft = _draft_of(form)
    viewer, names = await _runtime_names(request)
    check_csrf(viewer, form)
    validate(draft)
    variables, errors = parse_pairs(draft.variables, "Variables")
    secrets, secret_errors = parse_pairs(draft.secrets, "Secret variables")
    draft.errors += errors + secret_errors
    try:
        checked(
            PipelineIn,
            name=draft.name,
            yaml=draft.yaml,
            yaml_file=draft.yaml_file,
            variables=variables,
            secrets=secrets,
        )
    except Invalid as exc:
        draft.errors.append(exc.message)
    if draft.problems or draft.errors:
        return _form_page(request, viewer, draft, names, editing=False)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            await pipelines.create_pipeline(
                session,
                viewer.principal,
                name=draft.name,
                yaml=draft.yaml,
                yaml_file=draft.yaml_file,
                runtime=draft.runtime or None,
                variables=variables,
                sealed_secrets=svc.secrets.seal_all(secrets),
            )
    except (Invalid, Conflict, NotFound) as exc:
        draft.errors.append(exc.message)
        return _form_page(request, viewer, draft, names, editing=False)
    return see_other(f"/pipelines/{draft.name}")


@router.get("/pipelines/{name}")
async def pipeline_page(request: Request, name: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        pipeline = await pipelines.get_pipeline(session, viewer.principal, name)
        runtime = await session.get_one(Runtime, pipeline.runtime_id)
        recent = await builds.list_builds(session, viewer.principal, pipeline=name, limit=20)
        triggers = [t for t, _ in await trigger_store.list_triggers(session, viewer.principal, name)]
    return page(request, "pipeline.html", viewer, p=pipeline, runtime=runtime.name, builds=recent, triggers=triggers)


@router.get("/pipelines/{name}/edit")
async def edit_pipeline(request: Request, name: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        p = await pipelines.get_pipeline(session, viewer.principal, name)
        runtime = await session.get_one(Runtime, p.runtime_id)
        names = [r.name for r in await runtimes.list_runtimes(session, viewer.principal)]
    return _form_page(request, viewer, _draft_from(p, runtime.name), names, editing=True)


def _draft_from(p: Pipeline, runtime: str) -> Draft:
    return Draft(
        name=p.name,
        runtime=runtime,
        yaml_file=p.yaml_file,
        yaml=p.yaml,
        variables=_pairs_text(p.variables),
        kept_secrets=sorted(p.secrets),
    )


@router.post("/pipelines/{name}/edit")
async def update_pipeline(request: Request, name: str) -> Response:
    form = await read_form(request)
    draft = _draft_of(form)
    draft.name = name
    dropped = set(form.all("drop_secret"))
    viewer, names = await _runtime_names(request)
    check_csrf(viewer, form)
    validate(draft)
    variables, errors = parse_pairs(draft.variables, "Variables")
    secrets, secret_errors = parse_pairs(draft.secrets, "Secret variables")
    draft.errors += errors + secret_errors
    try:
        checked(PipelinePatch, yaml=draft.yaml, yaml_file=draft.yaml_file, variables=variables, secrets=secrets)
    except Invalid as exc:
        draft.errors.append(exc.message)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            p = await pipelines.get_pipeline(session, viewer.principal, name)
            draft.kept_secrets = sorted(p.secrets)
            if draft.problems or draft.errors:
                return _form_page(request, viewer, draft, names, editing=True)
            sealed = {k: v for k, v in p.secrets.items() if k not in dropped and k not in secrets}
            sealed.update(svc.secrets.seal_all(secrets))
            await pipelines.update_pipeline(
                session,
                viewer.principal,
                name,
                yaml=draft.yaml,
                yaml_file=draft.yaml_file,
                runtime=draft.runtime or None,
                variables=variables,
                sealed_secrets=sealed,
            )
    except (Invalid, Conflict) as exc:
        draft.errors.append(exc.message)
        return _form_page(request, viewer, draft, names, editing=True)
    return see_other(f"/pipelines/{name}")


@router.post("/pipelines/{name}/run")
async def run_pipeline(request: Request, name: str) -> Response:
    form = await read_form(request)
    variables, errors = parse_pairs(form.get("variables"), "Variables")
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
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
