"""An account's people (web UI logins)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from outpost.server.api.schemas.base import In


class UserIn(In):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(max_length=20)
    password: str | None = Field(default=None, max_length=1000)  # none: one is generated and answered once


class UserOut(BaseModel):
    name: str
    role: str
    account: str
    created_at: str | None
    password: str | None = None  # only when generated
