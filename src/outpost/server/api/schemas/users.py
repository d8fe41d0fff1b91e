"""An account's people (web UI logins)."""

from __future__ import annotations

from pydantic import Field

from outpost.server.api.schemas.base import In, Out, Time


class UserIn(In):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field(max_length=20)
    password: str | None = Field(default=None, max_length=1000)  # none: one is generated and answered once


class UserOut(Out):
    name: str = Field(validation_alias="username")
    role: str
    account: str
    created_at: Time
    password: str | None = None  # only when generated
