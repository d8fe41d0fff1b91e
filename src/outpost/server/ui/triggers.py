"""Trigger pages: the list, a form to add one, and a trigger's page with its webhook endpoint and secret
(copy buttons), how to set it up at each Git provider, and its deliveries log."""

from __future__ import annotations

import secrets as random

from fastapi import APIRouter, Request, Response

from outpost.errors import Invalid
from outpost.server.api.schemas.triggers import TriggerIn
from outpost.server.api.webhooks import PREFIX
from outpost.server.store import deliveries as delivery_store
from outpost.server.store import pipelines
from outpost.server.store import triggers as store
from outpost.server.store.accounts import ADMIN, require
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.sessions import Form, as_viewer, check_csrf, checked, read_form, services

router = APIRouter(route_class=UiRoute, include_in_schema=False)
# The events the form offers, in the order a person thinks of them; the store knows more (the API takes them).
EVENT_CHOICES = (
    ("push.heads", "Branch pushes"),
    ("push.tags", "Tag pushes"),
    ("pullrequest.opened", "Pull request opened"),
    ("pullrequest.synchronize", "Pull request updated (new commits)"),
    ("pullrequest.reopened", "Pull request reopened"),
    ("pullrequest.closed", "Pull request closed"),
    ("pullrequest.merged", "Pull request merged"),
    ("pullrequest.commentAdded", "Pull request comment"),
    ("release", "Release"),
)
PROVIDER_NAMES = {"github": "GitHub", "gitlab": "GitLab", "bitbucket-server": "Bitbucket Server"}


def _settings(form: Form) -> dict[str, object]:
    """The form as the API's TriggerIn would take it (the same limits), minus the pipeline."""
    cron = form.get("cron").strip()
    values: dict[str, object] = {
        "pipeline": form.get("pipeline"),
        "name": form.get("name").strip() or None,
        "disabled": False,
    }
    if form.get("kind") == "cron":
        values.update(cron=cron or "", branch=form.get("branch").strip() or None)
    else:
        values.update(
            provider=form.get("provider"),
            repo=form.get("repo").strip(),
            events=form.all("events"),
            branch_regex=form.get("branch_regex").strip() or None,
            pr_target_regex=form.get("pr_target_regex").strip() or None,
            modified_files_glob=form.get("modified_files_glob").strip() or None,
        )
    body = checked(TriggerIn, **values)
    settings = body.model_dump(exclude={"pipeline"}, exclude_none=True)
    settings["kind"] = "cron" if body.cron is not None else "git"
    return settings


@router.get("/triggers")
async def trigger_list(request: Request) -> Response:
    async with as_viewer(request) as (session, viewer):
        rows = await store.list_triggers(session, viewer.principal)
    return page(request, "triggers.html", viewer, triggers=rows, providers=PROVIDER_NAMES)


async def _form(request: Request, form: Form | None, error: str = "", pipeline: str = "") -> Response:
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, ADMIN)  # the trigger form is for admins only
        names = [p.name for p in await pipelines.list_pipelines(session, viewer.principal)]
    values = form or Form([("pipeline", pipeline), ("kind", "git"), ("provider", "github"), ("events", "push.heads")])
    return page(
        request,
        "trigger_form.html",
        viewer,
        status_code=422 if error else 200,
        f=values,
        pipelines=names,
        providers=PROVIDER_NAMES,
        events=EVENT_CHOICES,
        error=error,
    )


@router.get("/new/trigger")
async def new_trigger(request: Request, pipeline: str = "") -> Response:
    return await _form(request, None, pipeline=pipeline)


@router.post("/new/trigger")
async def create_trigger(request: Request) -> Response:
    form = await read_form(request)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            settings = _settings(form)
            secret = random.token_urlsafe(32) if settings["kind"] == "git" else None
            sealed = svc.secrets.seal(secret) if secret else None
            trigger = await store.create_trigger(
                session, viewer.principal, form.get("pipeline"), settings, sealed_secret=sealed
            )
    except Invalid as exc:
        return await _form(request, form, exc.message)
    return see_other(f"/triggers/{trigger.id}")


@router.get("/triggers/{trigger_id}")
async def trigger_page(request: Request, trigger_id: str) -> Response:
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        trigger = await store.get_trigger(session, viewer.principal, trigger_id)
        pipeline = await store.pipeline_name(session, trigger)
        deliveries = await delivery_store.list_deliveries(session, viewer.principal, trigger_id, limit=50)
    secret = svc.secrets.open(store.sealed_secret(trigger)) if trigger.kind == "git" else ""
    return page(
        request,
        "trigger.html",
        viewer,
        t=trigger,
        pipeline=pipeline,
        endpoint=f"{svc.public_url}{PREFIX}{trigger.id}" if trigger.kind == "git" else "",
        secret=secret,
        deliveries=deliveries,
        providers=PROVIDER_NAMES,
        releases=any(e.startswith("release") for e in trigger.events),
    )


@router.post("/triggers/{trigger_id}/{action}")
async def change_trigger(request: Request, trigger_id: str, action: str) -> Response:
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        if action in ("enable", "disable"):
            await store.update_trigger(session, viewer.principal, trigger_id, {"disabled": action == "disable"})
        elif action == "rotate-secret":
            await store.set_secret(session, viewer.principal, trigger_id, svc.secrets.seal(random.token_urlsafe(32)))
        elif action == "remove":
            await store.remove_trigger(session, viewer.principal, trigger_id)
            return see_other("/triggers")
        else:
            raise Invalid(f"no trigger action {action!r}")
    return see_other(f"/triggers/{trigger_id}")
