"""The Kubernetes integration form, to add a cluster or edit one (server, CA, token or a pasted kubeconfig,
namespace, behind the firewall, the pipelines allowed to use it), and the allow-list on a cluster's card. Admins
only; the token or key is sealed and never sent back to the browser, not even in a refused form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid, NotFound
from outpost.kubeconfigs import KubeconfigError, parse
from outpost.server.api.gitqueries import QUERY_WAIT, cluster_check
from outpost.server.api.schemas.integrations import IntegrationIn, IntegrationPatch
from outpost.server.models import Integration
from outpost.server.store import clusters, gitqueries
from outpost.server.store import integrations as store
from outpost.server.store.accounts import ADMIN, Principal, require
from outpost.server.ui import integrations as listing
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.sessions import Form, as_viewer, check_csrf, checked, read_form, services

router = APIRouter(route_class=UiRoute, include_in_schema=False)
SECRETS = ("token", "kubeconfig")  # never written back into a refused form


async def _form(request: Request, form: Form | None, error: str = "", editing: Integration | None = None) -> Response:
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, ADMIN)
        names = sorted((await clusters.pipeline_names(session, viewer.principal.account_id)).values())
    return page(
        request,
        "cluster_form.html",
        viewer,
        status_code=422 if error else 200,
        f=form or Form([]),
        pipelines=names,
        error=error,
        editing=editing,
    )


@router.get("/new/integration/kubernetes")
async def new_cluster(request: Request) -> Response:
    return await _form(request, None)


@router.post("/new/integration/kubernetes")
async def create_cluster(request: Request) -> Response:
    form = await read_form(request)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            fields = _credential_fields(form)  # a pasted kubeconfig is read only for an admin
            insecure = form.checked("insecure") or bool(fields.pop("insecure", False))
            body = checked(
                IntegrationIn,
                kind="cluster",
                name=form.get("name").strip(),
                provider="kubernetes",
                runner_secret=form.get("runner_secret").strip() or None,
                behind_firewall=form.checked("behind_firewall"),
                insecure=insecure,
                allowed_pipelines=form.all("pipeline"),
                all_pipelines=form.checked("all_pipelines"),
                **fields,
            )
            await store.create_integration(
                session,
                viewer.principal,
                svc.secrets,
                kind=body.kind,
                name=body.name,
                provider=body.provider,
                url=body.url,
                secret=None if body.runner_secret else body.token,
                runner_secret=body.runner_secret,
                behind_firewall=body.behind_firewall,
                insecure=body.insecure,
                namespace=body.namespace,
                ca_pem=body.ca_pem,
                client_cert_pem=body.client_cert_pem,
                client_key=body.client_key_pem,
                allowed_pipelines=body.allowed_pipelines,
                all_pipelines=body.all_pipelines,
            )
    except (Invalid, Conflict, NotFound, KubeconfigError) as exc:
        return await _form(request, _refused(form), getattr(exc, "message", str(exc)))
    return see_other(f"/integrations#cluster-{body.name}")


def _refused(form: Form, name: str | None = None) -> Form:
    """A refused form as it goes back to be fixed: without the token or kubeconfig typed (and, when editing,
    with the cluster's own name whatever was posted)."""
    drop = (*SECRETS, "name") if name is not None else SECRETS
    form.pairs = [(k, v) for k, v in form.pairs if k not in drop] + ([("name", name)] if name is not None else [])
    return form


def _as_form(row: Integration, names: dict[str, str]) -> Form:
    """A cluster as its edit form shows it; the token or client key never leaves the server."""
    on = {True: "on", False: ""}
    pairs = [("name", row.name), ("server", row.url or ""), ("namespace", row.namespace or "")]
    pairs += [("ca_pem", row.ca_pem or ""), ("runner_secret", row.runner_secret or "")]
    pairs += [("behind_firewall", on[row.behind_firewall]), ("insecure", on[row.insecure])]
    pairs += [("all_pipelines", on[row.all_pipelines])]
    return Form(pairs + [("pipeline", p) for p in clusters.allowed_names(row, names)])


@router.get("/integrations/cluster/{name}/edit")
async def edit_form(request: Request, name: str) -> Response:
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, ADMIN)
        row = await store.get_integration(session, viewer.principal, "cluster", name)
        names = await clusters.pipeline_names(session, viewer.principal.account_id)
    return await _form(request, _as_form(row, names), editing=row)


@router.post("/integrations/cluster/{name}/edit")
async def edit(request: Request, name: str) -> Response:
    """As `PATCH /api/v1/integrations/cluster/{name}` with every field of the form: a token left blank (and no
    kubeconfig pasted) keeps the stored credential; a new token, or a kubeconfig's token or client certificate,
    replaces it and a runner secret; "Remove" drops it. Nothing changes unless all of it is valid."""
    form = await read_form(request)
    svc = services(request)
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            row = await store.get_integration(session, viewer.principal, "cluster", name)
            fields = _credential_fields(form)
            insecure = form.checked("insecure") or bool(fields.pop("insecure", False))
            body = checked(
                IntegrationPatch,
                runner_secret=form.get("runner_secret").strip() or None,
                allowed_pipelines=form.all("pipeline"),
                **fields,
            )
            new_credential = body.token or body.client_key_pem
            if new_credential and body.runner_secret:
                raise Invalid(
                    "give either a password/token or a runner secret, not both (empty the one you do not want)"
                )
            changes: dict[str, Any] = {"url": body.url, "namespace": body.namespace, "ca_pem": body.ca_pem}
            if body.token:
                changes["secret"] = body.token  # drops a client certificate
            elif body.client_key_pem:
                changes.update(client_cert_pem=body.client_cert_pem, client_key=body.client_key_pem)
            elif form.checked("remove_credential"):
                changes.update(secret=None, client_cert_pem=None)
            if body.runner_secret != row.runner_secret and not new_credential:
                changes["runner_secret"] = body.runner_secret  # None: the runner secret is removed
            await store.update_integration(
                session,
                viewer.principal,
                svc.secrets,
                "cluster",
                name,
                behind_firewall=form.checked("behind_firewall"),
                insecure=insecure,
                allowed_pipelines=body.allowed_pipelines or [],
                all_pipelines=form.checked("all_pipelines"),
                **changes,
            )
    except (Invalid, Conflict, KubeconfigError) as exc:
        async with as_viewer(request) as (session, viewer):  # the row as stored: the failed change rolled back
            row = await store.get_integration(session, viewer.principal, "cluster", name)
        return await _form(request, _refused(form, row.name), getattr(exc, "message", str(exc)), editing=row)
    return see_other(f"/integrations#cluster-{name}")


def _credential_fields(form: Form) -> dict[str, object]:
    """Server, CA, namespace and credential: from the pasted kubeconfig's context when there is one (a field typed
    in the form wins), else from the form's own fields."""
    typed: dict[str, object] = {
        "url": form.get("server").strip() or None,
        "namespace": form.get("namespace").strip() or None,
        "ca_pem": form.get("ca_pem").strip() or None,
        "token": form.get("token").strip() or None,
    }
    pasted = form.get("kubeconfig").strip()
    if not pasted:
        return typed
    found = parse(pasted, form.get("context").strip() or None)
    fields: dict[str, object] = {
        "url": found.server,
        "namespace": found.namespace,
        "ca_pem": found.ca_pem,
        "token": found.token,
        "client_cert_pem": found.client_cert_pem,
        "client_key_pem": found.client_key_pem,
        "insecure": found.insecure,
    }
    if typed["token"]:
        fields.update(client_cert_pem=None, client_key_pem=None)
    fields.update({k: v for k, v in typed.items() if v})
    return fields


@router.post("/integrations/cluster/{name}/pipelines")
async def set_allowed(request: Request, name: str) -> Response:
    """The allow-list from a cluster's card: the pipelines ticked, or all of them."""
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        await store.update_integration(
            session,
            viewer.principal,
            svc.secrets,
            "cluster",
            name,
            allowed_pipelines=form.all("pipeline"),
            all_pipelines=form.checked("all_pipelines"),
        )
    return see_other(f"/integrations#cluster-{name}")


@router.post("/integrations/cluster/{name}/check")
async def check(request: Request, name: str) -> Response:
    """Test from a runner: a runner of the default runtime asks the cluster's API server, as `outpost integration
    test NAME` does, and the answer shows on the cluster's card."""
    form = await read_form(request)
    svc = services(request)
    async with as_viewer(request) as (_session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)

    @asynccontextmanager
    async def caller() -> AsyncIterator[tuple[AsyncSession, Principal]]:
        async with as_viewer(request) as (session, viewer):  # each look is the admin's session again
            require(viewer.principal, ADMIN)
            yield session, viewer.principal

    try:
        answer = await cluster_check(svc, request, caller, name, None, QUERY_WAIT)
        ok, message = answer.ok, answer.message
    except (gitqueries.NoRunnerOnline, gitqueries.NoAnswer) as exc:
        ok, message = False, exc.message
    return await listing.list_page(request, result=(f"cluster-{name}", ok, message))
