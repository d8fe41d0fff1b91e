"""Runtimes and their runners."""

from __future__ import annotations

from pydantic import Field

from outpost.server.api.schemas.base import In, Out, Time


class RuntimeIn(In):
    name: str = Field(min_length=1, max_length=100)


class RuntimeOut(Out):
    name: str
    default: bool = Field(validation_alias="is_default")
    created_at: Time
    runners: list[RunnerOut] = Field(default_factory=list)
    install_token: str | None = None
    install_command: str | None = None


class RunnerOut(Out):
    id: str
    name: str
    runtime: str
    version: str
    executor: str
    concurrency: int
    hostname: str
    online: bool
    # "" (takes builds), "draining" (drained, still finishing builds) or "drained" (drained, holds none).
    drain: str = ""
    drained_at: Time = None
    builds: list[str] = Field(default_factory=list)  # the builds it holds now (claimed or running), oldest first
    last_seen_at: Time
    created_at: Time
