"""Webhook deliveries: what each request to a trigger came to (docs/triggers.md)."""

from __future__ import annotations

from pydantic import Field

from outpost.server.api.schemas.base import Out, Time


class DeliveryOut(Out):
    id: str
    trigger: str = Field(validation_alias="trigger_id")
    received_at: Time
    provider: str
    event: str | None
    delivery_id: str | None
    outcome: str  # build | filtered | ignored | rejected | pending (a runner computes the changed files)
    rule: str | None
    reason: str | None
    build: str | None = Field(validation_alias="build_id")
    status_code: int
    redelivery_of: str | None = None  # the delivery (our id) a redelivery repeated
    redeliverable: bool = False  # its body was kept (an authenticated delivery): it can be delivered again

    @classmethod
    def of(cls, delivery: object) -> DeliveryOut:
        return cls.read(delivery, redeliverable=getattr(delivery, "headers", None) is not None)
