"""Webhook deliveries: what each request to a trigger came to (docs/triggers.md)."""

from __future__ import annotations

from pydantic import BaseModel

from outpost.server import models
from outpost.server.api.schemas.base import iso


class DeliveryOut(BaseModel):
    id: str
    trigger: str
    received_at: str | None
    provider: str
    event: str | None
    delivery_id: str | None
    outcome: str  # build | filtered | ignored | rejected | pending (a runner computes the changed files)
    rule: str | None
    reason: str | None
    build: str | None
    status_code: int

    @classmethod
    def of(cls, d: models.Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            trigger=d.trigger_id,
            received_at=iso(d.received_at),
            provider=d.provider,
            event=d.event,
            delivery_id=d.delivery_id,
            outcome=d.outcome,
            rule=d.rule,
            reason=d.reason,
            build=d.build_id,
            status_code=d.status_code,
        )
