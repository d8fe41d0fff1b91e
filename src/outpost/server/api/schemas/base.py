"""Shared by every schema: times as ISO 8601 in UTC, request bodies that refuse unknown fields, answers read
from a model's attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Self

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
    """An answer read from a model's attributes (`StepOut.model_validate(row)`), no field copied by hand; a field
    named otherwise in the model says so with `validation_alias`."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    @classmethod
    def read(cls, row: object, **extra: object) -> Self:
        """The answer from `row`, with `extra` for the fields the row does not hold (or holds otherwise: every
        extra wins over the row's attribute of that name)."""
        return cls.model_validate(_Row(row, extra))


class _Row:
    """A model row seen with a few more attributes."""

    __slots__ = ("_extra", "_row")

    def __init__(self, row: object, extra: dict[str, object]) -> None:
        self._row = row
        self._extra = extra

    def __getattr__(self, name: str) -> object:
        return self._extra[name] if name in self._extra else getattr(self._row, name)


Variables = dict[str, str]
