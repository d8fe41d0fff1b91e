"""The append-only audit log."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class AuditOut(BaseModel):
    id: int
    at: str | None
    account: str | None
    actor: str
    address: str | None
    action: str
    target: str
    details: dict[str, Any]
