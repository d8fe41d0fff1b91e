"""Integrations: Git providers, registries, clusters, and testing a connection (docs/git.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from outpost.server import models
from outpost.server.api.schemas.base import In, Out, Time

Tags = list[Annotated[str, Field(min_length=1, max_length=50)]]


class IntegrationIn(In):
    """`password` or `token` (the same thing to git: one credential), or `runner_secret`: the name of a secret
    kept only on the runners, so that the control plane holds no credential at all."""

    kind: str = Field(max_length=20)
    name: str = Field(min_length=1, max_length=100)
    provider: str | None = Field(default=None, max_length=30)
    url: str | None = Field(default=None, max_length=500)
    domain: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=10_000)
    token: str | None = Field(default=None, max_length=10_000)
    runner_secret: str | None = Field(default=None, max_length=255)
    behind_firewall: bool = False
    default: bool = False
    insecure: bool = False
    tags: Tags = Field(default_factory=list, max_length=20)


class IntegrationPatch(In):
    """Only the fields given change; `null` or "" clears an optional one."""

    provider: str | None = Field(default=None, max_length=30)
    url: str | None = Field(default=None, max_length=500)
    domain: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=10_000)
    token: str | None = Field(default=None, max_length=10_000)
    runner_secret: str | None = Field(default=None, max_length=255)
    behind_firewall: bool | None = None
    default: bool | None = None
    insecure: bool | None = None
    tags: Tags | None = Field(default=None, max_length=20)


class IntegrationOut(Out):
    id: str
    kind: str
    name: str
    provider: str
    url: str | None
    domain: str | None
    username: str | None
    has_secret: bool  # a password or token is stored (sealed); it is never shown
    runner_secret: str | None
    behind_firewall: bool
    default: bool = Field(validation_alias="is_default")
    insecure: bool
    tags: list[str]
    created_at: Time
    updated_at: Time

    @classmethod
    def of(cls, i: models.Integration) -> IntegrationOut:
        return cls.read(i, has_secret=i.secret is not None)


class ConnectionOut(BaseModel):
    ok: bool
    message: str
