"""Accounts, their API tokens and the caller's own token (`whoami`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from outpost.server import models
from outpost.server.api.schemas.base import In, Out, Time


class AccountIn(In):
    name: str = Field(min_length=1, max_length=100)


class AccountOut(BaseModel):
    name: str
    token: str


class TokenIn(In):
    """`role` defaults to the creator's; `pipeline` limits the token to reading and running that pipeline;
    `expires` is a duration such as 30d, 12h or 90m."""

    name: str = Field(min_length=1, max_length=100)
    role: str | None = Field(default=None, max_length=20)
    pipeline: str | None = Field(default=None, min_length=1, max_length=150)
    expires: str | None = Field(default=None, min_length=1, max_length=20)


class TokenOut(Out):
    id: str
    name: str
    prefix: str
    superuser: bool = Field(validation_alias="is_superuser")
    created_at: Time
    last_used_at: Time
    revoked_at: Time
    token: str | None = None  # only when just created
    role: str = "admin"
    pipeline: str | None = None  # the one pipeline it may read and run (by name when known)
    expires_at: Time = None

    @classmethod
    def of(cls, row: models.ApiToken, token: str | None = None, pipeline: str | None = None) -> TokenOut:
        return cls.read(row, token=token, pipeline=pipeline or row.pipeline_id)


class WhoAmI(BaseModel):
    account: str
    token: str
    superuser: bool
    role: str = "admin"
    pipeline: str | None = None  # a scoped token's one pipeline
    expires_at: str | None = None
