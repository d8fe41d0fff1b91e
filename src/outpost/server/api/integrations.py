"""Integrations in the public API (/api/v1/integrations): Git providers, registries and clusters, and testing
a connection (`server/connections.py`). The git queries a runner answers for them are in `api/gitqueries.py`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Invalid
from outpost.server import connections
from outpost.server.api.deps import AsAdmin, AsViewer, Svc
from outpost.server.api.schemas.integrations import ConnectionOut, IntegrationIn, IntegrationOut, IntegrationPatch
from outpost.server.models import Integration
from outpost.server.store import clusters
from outpost.server.store import integrations as store
from outpost.server.store.accounts import DEVELOPER, Principal, rank

router = APIRouter(prefix="/api/v1", tags=["integrations"])


def _credential(password: str | None, token: str | None) -> str | None:
    if password and token:
        raise Invalid("give --password or --token, not both")
    return password or token


async def _out(session: AsyncSession, who: Principal, rows: list[Integration]) -> list[IntegrationOut]:
    """Answers as the caller may see them: a viewer sees only a cluster's name (not where it is, nor which
    pipelines may use it)."""
    names = await clusters.pipeline_names(session, who.account_id) if any(r.kind == "cluster" for r in rows) else {}
    names_only = rank(who.role) < rank(DEVELOPER)
    return [IntegrationOut.of(r, names, names_only=names_only) for r in rows]


@router.post("/integrations", status_code=201)
async def create_integration(body: IntegrationIn, token: AsAdmin, svc: Svc) -> IntegrationOut:
    async with svc.as_caller(token) as (session, who):
        row = await store.create_integration(
            session,
            who,
            svc.secrets,
            kind=body.kind,
            name=body.name,
            provider=body.provider,
            url=body.url,
            domain=body.domain,
            username=body.username,
            secret=_credential(body.password, body.token),
            runner_secret=body.runner_secret,
            behind_firewall=body.behind_firewall,
            is_default=body.default,
            insecure=body.insecure,
            tags=body.tags,
            namespace=body.namespace,
            ca_pem=body.ca_pem,
            client_cert_pem=body.client_cert_pem,
            client_key=body.client_key_pem,
            allowed_pipelines=body.allowed_pipelines,
            all_pipelines=body.all_pipelines,
        )
        return (await _out(session, who, [row]))[0]


@router.get("/integrations")
async def list_integrations(token: AsViewer, svc: Svc, kind: str | None = None) -> list[IntegrationOut]:
    async with svc.as_caller(token) as (session, who):
        return await _out(session, who, await store.list_integrations(session, who, kind))


@router.get("/integrations/{kind}/{name}")
async def show_integration(kind: str, name: str, token: AsViewer, svc: Svc) -> IntegrationOut:
    async with svc.as_caller(token) as (session, who):
        return (await _out(session, who, [await store.get_integration(session, who, kind, name)]))[0]


@router.patch("/integrations/{kind}/{name}")
async def update_integration(kind: str, name: str, body: IntegrationPatch, token: AsAdmin, svc: Svc) -> IntegrationOut:
    given = body.model_fields_set
    changes: dict[str, Any] = {f: getattr(body, f) for f in ("provider", "url", "domain", "username") if f in given}
    if given & {"password", "token"}:
        changes["secret"] = _credential(body.password, body.token)
    if "runner_secret" in given:
        changes["runner_secret"] = body.runner_secret
    for field in ("namespace", "ca_pem", "client_cert_pem"):
        if field in given:
            changes[field] = getattr(body, field)
    if "client_key_pem" in given:
        changes["client_key"] = body.client_key_pem
    async with svc.as_caller(token) as (session, who):
        row = await store.update_integration(
            session,
            who,
            svc.secrets,
            kind,
            name,
            behind_firewall=body.behind_firewall,
            is_default=body.default,
            insecure=body.insecure,
            tags=body.tags,
            allowed_pipelines=body.allowed_pipelines,
            all_pipelines=body.all_pipelines,
            **changes,
        )
        return (await _out(session, who, [row]))[0]


@router.delete("/integrations/{kind}/{name}", status_code=204)
async def delete_integration(kind: str, name: str, token: AsAdmin, svc: Svc) -> Response:
    async with svc.as_caller(token) as (session, who):
        await store.delete_integration(session, who, kind, name)
    return Response(status_code=204)


@router.post("/integrations/{kind}/{name}/test")
async def test_integration(kind: str, name: str, token: AsAdmin, svc: Svc) -> ConnectionOut:
    """409 for an integration behind the firewall: the control plane never connects to one."""
    async with svc.as_caller(token) as (session, who):
        row = await store.get_integration(session, who, kind, name)
    check = await connections.test_connection(row, svc.secrets)  # outside the transaction: it may take seconds
    return ConnectionOut(ok=check.ok, message=check.message)
