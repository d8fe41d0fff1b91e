"""What one system produced: latency samples per metric (milliseconds), or why it was skipped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

METRICS = ("dispatch", "first_log", "end_to_end")


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p90: float
    p99: float
    max: float


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default), `ordered` sorted ascending."""
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    ordered = sorted(values)
    return Summary(
        len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.9), percentile(ordered, 0.99), ordered[-1]
    )


def median(values: Sequence[float]) -> float | None:
    return percentile(sorted(values), 0.5) if values else None


@dataclass
class Result:
    """One column of the report: Outpost in one layout, or a peer."""

    key: str
    label: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    stages: dict[str, list[float]] = field(default_factory=dict)  # dispatch broken down (Outpost only)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    version: str = ""
    load: float | None = None  # 1-minute load average as its measured builds ended

    def record(self, timed: Timed) -> None:
        for metric, seconds in timed.metrics.items():
            self.samples[metric].append(seconds * 1000.0)
        for stage, seconds in timed.stages.items():
            self.stages.setdefault(stage, []).append(seconds * 1000.0)

    def summary(self, metric: str) -> Summary | None:
        return summarize(self.samples[metric])


@dataclass
class Timed:
    """One build's measurements, in seconds: metrics (some peers lack some) and dispatch stages."""

    metrics: dict[str, float]
    stages: dict[str, float] = field(default_factory=dict)
