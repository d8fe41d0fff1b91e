"""What a step ends with (its state, exit code and message), and which states fail a build."""

from __future__ import annotations

from dataclasses import dataclass

from outpost.wire import StepStatus

FAILED = frozenset({"failure", "error", "denied"})  # states that fail a build unless fail_fast says otherwise


@dataclass
class StepResult:
    status: StepStatus
    exit_code: int | None = None
    message: str | None = None


def duration(seconds: float) -> str:
    """A time span as a step's log says it: `2h`, `5m`, `90s`."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
