"""Integration pages: Git providers, registries and clusters, each maybe *behind the firewall* — then the
control plane never connects to it, and "Test connection" is disabled and says why."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from outpost.errors import Conflict, Invalid, NotFound
from outpost.server import connections
from outpost.server.api.schemas.integrations import IntegrationIn, IntegrationPatch
from outpost.server.models import Integration
from outpost.server.store import clusters
from outpost.server.store import integrations as store
from outpost.server.store.accounts import ADMIN, require
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.sessions import Form, as_viewer, check_csrf, checked, read_form, services

router = APIRouter(route_class=UiRoute, include_in_schema=False)
KIND_NAMES = {"git": "Git providers", "registry": "Registries", "cluster": "Clusters"}
# Where a hosted provider answers: a new Git integration of it starts with this address (the form's JavaScript
# swaps it when the provider changes; a person on GitHub Enterprise or their own GitLab types theirs).
DEFAULT_URLS = {"github": "https://github.com", "gitlab": "https://gitlab.com"}
EDITABLE = ("git", "registry")  # kinds the edit form below knows (a cluster's is in ui/clusters.py)
UNREACHABLE = (
    "Behind the firewall: the control plane cannot reach it (and never tries). A runner of the runtime can — "
    "builds, YAML from the repository and branch lists go through runners."
)


CLUSTER_TEST = (
    "A runner of the default runtime tests it, from where deploy steps reach it; the control plane never connects "
    "to a cluster (outpost integration test NAME --runtime R for another runtime)."
)


def why_untestable(row: Integration) -> str:
    """Why "Test connection" is disabled for this integration, or "" if it can be tested from here."""
    if row.kind == "cluster":  # tested by a runner, behind the firewall or not (ui/clusters.py)
        return CLUSTER_TEST
    if row.behind_firewall:
        return UNREACHABLE
    if row.runner_secret:
        return (
            f"Its credential lives only on the runners (runner secret {row.runner_secret}): the control plane has none."
        )
    return ""


async def list_page(request: Request, *, result: tuple[str, bool, str] | None = None) -> Response:
    async with as_viewer(request) as (session, viewer):
        rows = await store.list_integrations(session, viewer.principal)
        pipelines = await clusters.pipeline_names(session, viewer.principal.account_id)  # clusters' allow-lists
    groups = {kind: [r for r in rows if r.kind == kind] for kind in store.KINDS}
    return page(
        request,
        "integrations.html",
        viewer,
        groups=groups,
        kinds=KIND_NAMES,
        why=why_untestable,
        result=result,
        pipelines=pipelines,
        allowed=lambda row: clusters.allowed_names(row, pipelines),
    )


@router.get("/integrations")
async def integration_list(request: Request) -> Response:
    return await list_page(request)


async def _form(request: Request, form: Form | None, error: str = "", editing: Integration | None = None) -> Response:
    async with as_viewer(request) as (_session, viewer):
        require(viewer.principal, ADMIN)  # the integration form is for admins only
    values = form or _blank(request.query_params.get("kind", "git"))
    return page(
        request,
        "integration_form.html",
        viewer,
        status_code=422 if error else 200,
        f=values,
        providers=store.PROVIDERS,
        kinds=KIND_NAMES,
        error=error,
        editing=editing,
        default_urls=DEFAULT_URLS,
    )


def _blank(kind: str) -> Form:
    """A new integration's form: a Git one starts as GitHub at github.com."""
    if kind == "git":
        return Form([("kind", kind), ("provider", "github"), ("url", DEFAULT_URLS["github"])])
    return Form([("kind", kind)])


def _as_form(row: Integration) -> Form:
    """An integration as its edit form shows it; the stored password never leaves the server."""
    pairs = [("kind", row.kind), ("name", row.name), ("provider", row.provider), ("url", row.url or "")]
    pairs += [
        ("domain", row.domain or ""),
        ("username", row.username or ""),
        ("runner_secret", row.runner_secret or ""),
    ]
    pairs += [("behind_firewall", "on" if row.behind_firewall else ""), ("insecure", "on" if row.insecure else "")]
    return Form([*pairs, ("tags", " ".join(row.tags))])


def _tags(form: Form) -> list[str]:
    return [t.strip() for t in form.get("tags").replace(",", " ").split() if t.strip()]


@router.get("/new/integration")
async def new_integration(request: Request) -> Response:
    if request.query_params.get("kind") == "cluster":
        return see_other("/new/integration/kubernetes")  # its own form (ui/clusters.py)
    return await _form(request, None)


@router.post("/new/integration")
async def create_integration(request: Request) -> Response:
    form = await read_form(request)
    svc = services(request)
    tags = _tags(form)
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            body = checked(
                IntegrationIn,
                kind=form.get("kind"),
                name=form.get("name").strip(),
                provider=form.get("provider") or None,
                url=form.get("url").strip() or _default_url(form) or None,
                domain=form.get("domain").strip() or None,
                username=form.get("username").strip() or None,
                password=form.get("password") or None,
                runner_secret=form.get("runner_secret").strip() or None,
                behind_firewall=form.checked("behind_firewall"),
                insecure=form.checked("insecure"),
                tags=tags,
            )
            await store.create_integration(
                session,
                viewer.principal,
                svc.secrets,
                kind=body.kind,
                name=body.name,
                provider=body.provider,
                url=body.url,
                domain=body.domain,
                username=body.username,
                secret=body.password,
                runner_secret=body.runner_secret,
                behind_firewall=body.behind_firewall,
                insecure=body.insecure,
                tags=body.tags,
            )
    except (Invalid, Conflict, NotFound) as exc:
        form.pairs = [(k, v) for k, v in form.pairs if k != "password"]  # a credential is not sent back
        return await _form(request, form, exc.message)
    return see_other("/integrations")


def _default_url(form: Form) -> str:
    """A Git integration of a hosted provider left without an address gets the provider's own."""
    provider = form.get("provider") or ("github" if form.get("kind") == "git" else "")
    return DEFAULT_URLS.get(provider, "") if form.get("kind") == "git" else ""


@router.get("/integrations/{kind}/{name}/edit")
async def edit_form(request: Request, kind: str, name: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        row = await store.get_integration(session, viewer.principal, kind, name)
    _check_editable(row)
    return await _form(request, _as_form(row), editing=row)


def _check_editable(row: Integration) -> None:
    if row.kind not in EDITABLE:
        raise Invalid(f"a {row.kind} integration is changed with the API (PATCH /api/v1/integrations/...)")


@router.post("/integrations/{kind}/{name}/edit")
async def edit(request: Request, kind: str, name: str) -> Response:
    """As `PATCH /api/v1/integrations/{kind}/{name}` with every field of the form: a password left blank keeps
    the stored one ("Remove" drops it); a password replaces a runner secret and the other way round. Nothing
    changes unless all of it is valid."""
    form = await read_form(request)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            row = await store.get_integration(session, viewer.principal, kind, name)
            _check_editable(row)
            body = checked(
                IntegrationPatch,
                provider=(form.get("provider") or row.provider) if kind == "git" else None,
                url=form.get("url").strip() or None,
                domain=form.get("domain").strip() or None,
                username=form.get("username").strip() or None,
                password=form.get("password") or None,
                runner_secret=form.get("runner_secret").strip() or None,
                tags=_tags(form),
            )
            if body.password and body.runner_secret:
                raise Invalid("give a password or a runner secret's name, not both (empty the one you do not want)")
            changes: dict[str, Any] = {
                "url": body.url if kind == "git" else row.url,
                "domain": body.domain if kind == "registry" else row.domain,
                "username": body.username,
                "behind_firewall": form.checked("behind_firewall"),
                "insecure": form.checked("insecure") if kind == "registry" else None,
                "tags": body.tags,
            }
            if body.provider:
                changes["provider"] = body.provider
            if body.password:
                changes["secret"] = body.password
            elif form.checked("remove_password"):
                changes["secret"] = None
            if body.runner_secret != row.runner_secret and not body.password:
                changes["runner_secret"] = body.runner_secret  # None: the runner secret is removed
            await store.update_integration(session, viewer.principal, svc.secrets, kind, name, **changes)
    except (Invalid, Conflict) as exc:
        async with as_viewer(request) as (session, viewer):
            row = await store.get_integration(session, viewer.principal, kind, name)
        form.pairs = [(k, v) for k, v in form.pairs if k not in ("password", "kind", "name")]
        form.pairs += [("kind", row.kind), ("name", row.name)]
        return await _form(request, form, exc.message, editing=row)
    return see_other(f"/integrations#{kind}-{name}")


@router.post("/integrations/{kind}/{name}/firewall")
async def set_firewall(request: Request, kind: str, name: str) -> Response:
    """The *behind the firewall* toggle."""
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        await store.update_integration(
            session, viewer.principal, svc.secrets, kind, name, behind_firewall=form.checked("behind_firewall")
        )
    return see_other(f"/integrations#{kind}-{name}")


@router.post("/integrations/{kind}/{name}/test")
async def test_connection(request: Request, kind: str, name: str) -> Response:
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        row = await store.get_integration(session, viewer.principal, kind, name)
    why = why_untestable(row)
    if why:  # the button is disabled; a hand-made request gets the same answer as the API's 409
        return await list_page(request, result=(f"{kind}-{name}", False, why))
    check = await connections.test_connection(row, svc.secrets)  # outside the transaction: it may take seconds
    return await list_page(request, result=(f"{kind}-{name}", check.ok, check.message))


@router.post("/integrations/{kind}/{name}/remove")
async def remove(request: Request, kind: str, name: str) -> Response:
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        await store.delete_integration(session, viewer.principal, kind, name)
    return see_other("/integrations")
