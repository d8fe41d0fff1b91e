"""Triggers: a Git provider's webhook or a cron schedule (docs/triggers.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from outpost.server import models
from outpost.server.api.schemas.base import In, Out, Time, Variables

TriggerEvents = list[Annotated[str, Field(min_length=1, max_length=100)]]


class TriggerIn(In):
    """A git trigger (provider, repo, events, ...) or, with `cron`, a cron trigger."""

    pipeline: str = Field(min_length=1, max_length=150)
    name: str | None = Field(default=None, min_length=1, max_length=150)
    provider: str | None = Field(default=None, max_length=30)
    repo: str | None = Field(default=None, max_length=255)
    events: TriggerEvents = Field(default_factory=list, max_length=50)
    branch_regex: str | None = Field(default=None, max_length=2000)
    pr_target_regex: str | None = Field(default=None, max_length=2000)
    comment_regex: str | None = Field(default=None, max_length=2000)
    modified_files_glob: str | None = Field(default=None, max_length=2000)
    git: str | None = Field(default=None, min_length=1, max_length=100)  # integration for changed files
    allow_fork_events: bool = False
    variables: Variables = Field(default_factory=dict, max_length=500)
    disabled: bool = False
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    termination_policy: str = Field(default="none", max_length=50)
    cron: str | None = Field(default=None, min_length=1, max_length=100)
    branch: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, max_length=2000)


class TriggerPatch(In):
    """Only the fields given change; `null` clears an optional one."""

    name: str | None = Field(default=None, min_length=1, max_length=150)
    repo: str | None = Field(default=None, max_length=255)
    events: TriggerEvents | None = Field(default=None, max_length=50)
    branch_regex: str | None = Field(default=None, max_length=2000)
    pr_target_regex: str | None = Field(default=None, max_length=2000)
    comment_regex: str | None = Field(default=None, max_length=2000)
    modified_files_glob: str | None = Field(default=None, max_length=2000)
    git: str | None = Field(default=None, min_length=1, max_length=100)
    allow_fork_events: bool | None = None
    variables: Variables | None = Field(default=None, max_length=500)
    disabled: bool | None = None
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    termination_policy: str | None = Field(default=None, max_length=50)
    cron: str | None = Field(default=None, min_length=1, max_length=100)
    branch: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, max_length=2000)


class TriggerOut(Out):
    id: str
    name: str
    pipeline: str
    kind: str
    provider: str | None
    repo: str | None
    events: list[str]
    branch_regex: str | None
    pr_target_regex: str | None
    comment_regex: str | None
    modified_files_glob: str | None
    git: str | None  # the git integration a runner computes changed files through (None: pipeline's or default)
    allow_fork_events: bool
    variables: Variables
    disabled: bool
    concurrency: int | None
    termination_policy: str
    cron: str | None
    branch: str | None
    message: str | None
    endpoint: str | None  # where the Git provider POSTs (git triggers)
    last_fired_at: Time
    created_at: Time
    updated_at: Time
    secret: str | None = None  # only when created, rotated or explicitly revealed

    @classmethod
    def of(cls, t: models.Trigger, pipeline: str, endpoint: str | None, secret: str | None = None) -> TriggerOut:
        # `secret` always given: the row's own is the sealed one
        return cls.read(t, pipeline=pipeline, endpoint=endpoint, secret=secret)


class TriggerSecret(BaseModel):
    id: str
    secret: str
