"""Shared by every schema: times as ISO 8601 in UTC, request bodies that refuse unknown fields, answers read
from a model's attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else None


def _stored_time(value: object) -> object:
    """A time as the models store it (seconds since the epoch) becomes ISO 8601; a string stays as it is."""
    return iso(value) if value is None or isinstance(value, int | float) else value


Time = Annotated[str | None, BeforeValidator(_stored_time)]


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """An answer read from a model's attributes: `StepOut.model_validate(row)`, no field copied by hand."""

    model_config = ConfigDict(from_attributes=True)


Variables = dict[str, str]
