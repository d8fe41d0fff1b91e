"""Shared by every schema: times as ISO 8601 in UTC, request bodies that refuse unknown fields."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else None


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Variables = dict[str, str]
