"""Trigger pages: the list, a form to add one, and a trigger's page with its webhook endpoint and secret
(copy buttons), how to set it up at each Git provider, and its deliveries log."""

from __future__ import annotations

import re
import secrets as random

from fastapi import APIRouter, Request, Response

from outpost.errors import Invalid
from outpost.server import deliveries as webhook_deliveries
from outpost.server.api.schemas.triggers import TriggerIn, TriggerPatch
from outpost.server.api.webhooks import PREFIX
from outpost.server.models import Trigger
from outpost.server.store import audit, pipelines
from outpost.server.store import deliveries as delivery_store
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
KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")  # a Redeliver button's key: its form sent twice is one redelivery


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


def _changes(form: Form, kind: str) -> dict[str, object]:
    """The edit form as a PATCH would say it (the same limits): an emptied field clears the setting."""
    if kind == "cron":
        values: dict[str, object] = {"cron": form.get("cron").strip() or None, "branch": form.get("branch").strip()}
    else:
        values = {
            "repo": form.get("repo").strip(),
            "events": form.all("events"),
            "branch_regex": form.get("branch_regex").strip(),
            "pr_target_regex": form.get("pr_target_regex").strip(),
            "modified_files_glob": form.get("modified_files_glob").strip(),
        }
    values["name"] = form.get("name").strip()
    body = checked(TriggerPatch, **{k: v if v != "" else None for k, v in values.items()})
    changes = body.model_dump(include=set(values))
    if kind == "cron" and changes["cron"] is None:
        raise Invalid("a cron trigger needs a cron expression")
    return changes


@router.get("/triggers")
async def trigger_list(request: Request) -> Response:
    async with as_viewer(request) as (session, viewer):
        rows = await store.list_triggers(session, viewer.principal)
    return page(request, "triggers.html", viewer, triggers=rows, providers=PROVIDER_NAMES)


async def _form(
    request: Request, form: Form | None, error: str = "", pipeline: str = "", editing: Trigger | None = None
) -> Response:
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, ADMIN)  # the trigger form is for admins only
        names = [p.name for p in await pipelines.list_pipelines(session, viewer.principal)]
        if editing is not None and form is None:
            form = _as_form(editing, await store.pipeline_name(session, editing))
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
        editing=editing,
    )


def _as_form(t: Trigger, pipeline: str) -> Form:
    """A trigger's settings as its edit form shows them."""
    pairs = [("pipeline", pipeline), ("kind", t.kind), ("name", t.name), ("provider", t.provider or "")]
    pairs += [
        ("repo", t.repo or ""),
        ("branch_regex", t.branch_regex or ""),
        ("pr_target_regex", t.pr_target_regex or ""),
    ]
    pairs += [("modified_files_glob", t.modified_files_glob or ""), ("cron", t.cron or ""), ("branch", t.branch or "")]
    return Form(pairs + [("events", e) for e in t.events])


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


@router.get("/triggers/{trigger_id}/edit")
async def edit_trigger_form(request: Request, trigger_id: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        trigger = await store.get_trigger(session, viewer.principal, trigger_id)
    return await _form(request, None, editing=trigger)


@router.post("/triggers/{trigger_id}/edit")
async def edit_trigger(request: Request, trigger_id: str) -> Response:
    """As `PATCH /api/v1/triggers/{id}`: nothing changes unless every field is valid (the form comes back with
    the reason). Kind, provider and pipeline stay: remove the trigger and add another to change them."""
    form = await read_form(request)
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            trigger = await store.get_trigger(session, viewer.principal, trigger_id)
            await store.update_trigger(session, viewer.principal, trigger_id, _changes(form, trigger.kind))
    except Invalid as exc:
        async with as_viewer(request) as (session, viewer):
            trigger = await store.get_trigger(session, viewer.principal, trigger_id)
            fixed = [("pipeline", await store.pipeline_name(session, trigger)), ("kind", trigger.kind)]
        fixed.append(("provider", trigger.provider or ""))
        kept = [(k, v) for k, v in form.pairs if k not in ("pipeline", "kind", "provider")]
        return await _form(request, Form(fixed + kept), exc.message, editing=trigger)
    return see_other(f"/triggers/{trigger_id}")


@router.post("/triggers/{trigger_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, trigger_id: str, delivery_id: str) -> Response:
    """As the API's redeliver: the stored body decided again, shown as a new row of the deliveries list."""
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        original = await delivery_store.get_delivery(session, viewer.principal, trigger_id, delivery_id)
        trigger = await store.get_trigger(session, viewer.principal, trigger_id)
        await audit.record(session, viewer.principal, "trigger.redeliver", f"{trigger.name} ({trigger.id})")
    key = form.get("key")
    await webhook_deliveries.redeliver(svc, trigger_id, original, key if KEY.fullmatch(key) else None)
    return see_other(f"/triggers/{trigger_id}#deliveries-title")


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
        no_ping=webhook_deliveries.NO_PING if trigger.provider == "gitlab" else "",
        key=random.token_urlsafe(12),  # this page's Redeliver buttons' (with the delivery: one per button)
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
        elif action == "test-delivery":
            trigger = await store.get_trigger(session, viewer.principal, trigger_id)
            if trigger.kind != "git":
                raise Invalid("only git triggers receive deliveries")
            await audit.record(session, viewer.principal, "trigger.test_delivery", f"{trigger.name} ({trigger.id})")
        else:
            raise Invalid(f"no trigger action {action!r}")
    if action == "test-delivery":  # after the commit above: the delivery records itself in its own transaction
        await webhook_deliveries.send_test(svc, trigger)
        return see_other(f"/triggers/{trigger_id}#deliveries-title")
    return see_other(f"/triggers/{trigger_id}")
