"""Triggers in the public API (/api/v1): create, list, show, change, remove, secrets and deliveries."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Response

from outpost.errors import Invalid
from outpost.server import deliveries as webhook_deliveries
from outpost.server.api.deps import Access, AsAdmin, AsViewer, Svc
from outpost.server.api.schemas.deliveries import DeliveryOut
from outpost.server.api.schemas.triggers import TriggerIn, TriggerOut, TriggerPatch, TriggerSecret
from outpost.server.api.webhooks import PREFIX
from outpost.server.models import Trigger
from outpost.server.services import Services
from outpost.server.store import audit, deliveries
from outpost.server.store import triggers as store

router = APIRouter(prefix="/api/v1", tags=["triggers"])
NO_STORE = {"Cache-Control": "no-store"}


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _out(svc: Services, trigger: Trigger, pipeline: str, secret: str | None = None) -> TriggerOut:
    endpoint = f"{svc.public_url}{PREFIX}{trigger.id}" if trigger.kind == "git" else None
    return TriggerOut.of(trigger, pipeline, endpoint, secret)


@router.post("/triggers", status_code=201)
async def create_trigger(body: TriggerIn, response: Response, token: AsAdmin, svc: Svc) -> TriggerOut:
    """A git trigger answers with its endpoint and secret, the secret shown here and on request only."""
    settings = body.model_dump(exclude={"pipeline"}, exclude_none=True)
    settings["kind"] = "cron" if body.cron else "git"
    secret = new_secret() if settings["kind"] == "git" else None
    async with svc.as_caller(token) as (session, who):
        trigger = await store.create_trigger(
            session, who, body.pipeline, settings, sealed_secret=svc.secrets.seal(secret) if secret else None
        )
        name = await store.pipeline_name(session, trigger)
    response.headers.update(NO_STORE)
    return _out(svc, trigger, name, secret)


@router.get("/triggers")
async def list_triggers(token: AsViewer, svc: Svc, pipeline: str | None = None) -> list[TriggerOut]:
    async with svc.as_caller(token) as (session, who):
        return [_out(svc, t, name) for t, name in await store.list_triggers(session, who, pipeline)]


@router.get("/triggers/{trigger_id}")
async def show_trigger(trigger_id: str, token: AsViewer, svc: Svc) -> TriggerOut:
    async with svc.as_caller(token) as (session, who):
        trigger = await store.get_trigger(session, who, trigger_id)
        return _out(svc, trigger, await store.pipeline_name(session, trigger))


@router.patch("/triggers/{trigger_id}")
async def update_trigger(trigger_id: str, body: TriggerPatch, token: AsAdmin, svc: Svc) -> TriggerOut:
    async with svc.as_caller(token) as (session, who):
        trigger = await store.update_trigger(session, who, trigger_id, body.model_dump(exclude_unset=True))
        return _out(svc, trigger, await store.pipeline_name(session, trigger))


@router.delete("/triggers/{trigger_id}")
async def remove_trigger(trigger_id: str, token: AsAdmin, svc: Svc) -> dict[str, str]:
    async with svc.as_caller(token) as (session, who):
        trigger = await store.remove_trigger(session, who, trigger_id)
    return {"id": trigger.id, "status": "removed"}


@router.get("/triggers/{trigger_id}/secret")
async def reveal_secret(trigger_id: str, response: Response, token: AsAdmin, svc: Svc) -> TriggerSecret:
    """The webhook secret, for a person copying it into the Git provider again."""
    async with svc.as_caller(token) as (session, who):
        trigger = await store.get_trigger(session, who, trigger_id)
        sealed = store.sealed_secret(trigger)
    response.headers.update(NO_STORE)
    return TriggerSecret(id=trigger.id, secret=svc.secrets.open(sealed))


@router.post("/triggers/{trigger_id}/rotate-secret")
async def rotate_secret(trigger_id: str, response: Response, token: AsAdmin, svc: Svc) -> TriggerOut:
    """A new secret at once: deliveries signed with the old one are refused from now on."""
    secret = new_secret()
    async with svc.as_caller(token) as (session, who):
        trigger = await store.set_secret(session, who, trigger_id, svc.secrets.seal(secret))
        name = await store.pipeline_name(session, trigger)
    response.headers.update(NO_STORE)
    return _out(svc, trigger, name, secret)


@router.get("/triggers/{trigger_id}/deliveries")
async def list_deliveries(
    trigger_id: str,
    token: AsViewer,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: str | None = None,
) -> list[DeliveryOut]:
    """Newest first; pass the last delivery's id as `before` for the next page."""
    async with svc.as_caller(token) as (session, who):
        rows = await deliveries.list_deliveries(session, who, trigger_id, limit=limit, before=before)
        return [DeliveryOut.of(d) for d in rows]


@router.post("/triggers/{trigger_id}/test-delivery")
async def send_test_delivery(trigger_id: str, token: AsAdmin, svc: Svc) -> DeliveryOut:
    """The provider's ping, signed with the trigger's secret, through the webhook's own path (not for GitLab,
    which has none: 422 says what to do instead)."""
    async with svc.as_caller(token) as (session, who):
        trigger = await store.get_trigger(session, who, trigger_id)
        if trigger.kind != "git":
            raise Invalid("only git triggers receive deliveries")
        await audit.record(session, who, "trigger.test_delivery", f"{trigger.name} ({trigger.id})")
    answer = await webhook_deliveries.send_test(svc, trigger)
    return await _delivery(svc, token, trigger_id, answer.body["delivery"])


@router.post("/triggers/{trigger_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(
    trigger_id: str,
    delivery_id: str,
    token: AsAdmin,
    svc: Svc,
    key: Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> DeliveryOut:
    """The stored delivery decided again as it arrived (the trigger's rules as they are now): a new delivery,
    `redelivery_of` the first. 422 for one whose body was not kept (rejected by its signature). The same `key`
    again answers the same redelivery instead of making another (a retried request)."""
    async with svc.as_caller(token) as (session, who):
        original = await deliveries.get_delivery(session, who, trigger_id, delivery_id)
        trigger = await store.get_trigger(session, who, trigger_id)
        await audit.record(session, who, "trigger.redeliver", f"{trigger.name} ({trigger.id})", delivery=original.id)
    answer = await webhook_deliveries.redeliver(svc, trigger_id, original, key)
    return await _delivery(svc, token, trigger_id, answer.body["delivery"])


async def _delivery(svc: Services, token: Access, trigger_id: str, delivery_id: str) -> DeliveryOut:
    async with svc.as_caller(token) as (session, who):
        return DeliveryOut.of(await deliveries.get_delivery(session, who, trigger_id, delivery_id))
