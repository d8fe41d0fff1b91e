"""Runtimes and their runners."""

from __future__ import annotations

from pydantic import BaseModel, Field

from outpost.server.api.schemas.base import In


class RuntimeIn(In):
    name: str = Field(min_length=1, max_length=100)


class RuntimeOut(BaseModel):
    name: str
    default: bool
    created_at: str | None
    runners: list[RunnerOut] = Field(default_factory=list)
    install_token: str | None = None
    install_command: str | None = None


class RunnerOut(BaseModel):
    id: str
    name: str
    runtime: str
    version: str
    executor: str
    concurrency: int
    hostname: str
    online: bool
    last_seen_at: str | None
    created_at: str | None
