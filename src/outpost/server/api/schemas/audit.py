"""The append-only audit log."""

from __future__ import annotations

from typing import Any

from outpost.server.api.schemas.base import Out, Time


class AuditOut(Out):
    id: int
    at: Time
    account: str | None
    actor: str
    address: str | None
    action: str
    target: str
    details: dict[str, Any]
