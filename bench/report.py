"""The benchmark's section of docs/benchmarks.md: machine, command, one table per metric, interpretation.

The section sits between two markers; writing replaces it and leaves the rest of the file alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mdsection
from interpretation import interpret
from samples import Result, Summary, median

SHORT_NAMES = {
    "embedded": "one process",
    "separate": "separate processes",
    "buildbot": "Buildbot",
    "prefect": "Prefect",
}
METRIC_TITLES = {
    "dispatch": "Dispatch latency: request sent → the first step's first command runs",
    "first_log": "First log line: request sent → the step's first log bytes reach an API client",
    "end_to_end": "End to end: request sent → the client sees the build's final status",
}


@dataclass(frozen=True)
class Run:
    """How the benchmark was run, for the report."""

    command: str
    builds: int
    warmup: int
    prefect_builds: int
    prefect_warmup: int
    gap: float
    machine: list[tuple[str, str]]
    spawn_floor_ms: float | None
    load: tuple[float, float]  # 1-minute load average before and after
    stages: Sequence[tuple[str, str]]


def write_section(path: Path, section: str) -> None:
    mdsection.write_section(path, section, "bench/dispatch.py")


def render(run: Run, results: Sequence[Result]) -> str:
    parts = [
        "## Dispatch latency",
        _method(run),
        _machine(run),
        *(_metric_table(metric, title, results) for metric, title in METRIC_TITLES.items()),
        _stage_table(run, results),
        _notes(results),
        "### Reading the numbers\n\n" + " ".join(interpret(results)),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _method(run: Run) -> str:
    prefect = f" (Prefect: {run.prefect_builds} after {run.prefect_warmup})" if run.prefect_builds else ""
    floor = (
        f"; Python spawning that bash alone takes {run.spawn_floor_ms:.1f} ms (median)" if run.spawn_floor_ms else ""
    )
    lines = [
        f"- **Command**: `{run.command}` (what `make bench` runs): {run.builds} measured builds per system after "
        f"{run.warmup} warm-up build(s){prefect}, one at a time, {run.gap:g} s apart. Each system runs alone and is "
        "stopped before the next starts; all traffic stays on loopback.",
        "- **The build**: one step whose first command is `echo $EPOCHREALTIME` in bash (a variable: reading it "
        f"costs nothing){floor}. *Dispatch* is that timestamp minus the client's clock just before it sent the "
        "trigger request; *first log* is when the first answer holding the step's bytes reached the client; *end "
        "to end* is when the client saw the final status. Our client sets TCP_NODELAY on its own sockets.",
        "- **Outpost**: `POST /api/v1/pipelines/bench/builds`, then `GET /api/v1/builds/{id}/log?after=N&wait=20` "
        "long-polls until `finished`. *One process* is `outpost up --no-example` (its runner still talks HTTP to "
        "the control plane over loopback); *separate processes* is `outpost server` plus `outpost runner start` "
        "with an install token.",
        "- **Buildbot**: the REST API's JSON-RPC `force` on a ForceScheduler; the step is a `ShellCommand` writing "
        "the timestamp to a file; the finish is seen by polling the build request every 10 ms (Buildbot's API has "
        "no long-poll), which adds up to ~10 ms to its end to end.",
        "- **Prefect**: `create_flow_run` on a deployment of a `process` work pool, worker started with "
        "`PREFECT_WORKER_QUERY_SECONDS=1`; the flow's first statement writes `time.time()` to a file; the finish is "
        "seen by polling the flow run every 50 ms.",
        "- The peers' APIs offer no live log follow comparable to Outpost's: their first-log cells are empty. The "
        "machine is shared (see the load average): other work on its cores adds noise, mostly to the tails.",
    ]
    return "\n".join(lines)


def _machine(run: Run) -> str:
    load = f"{run.load[0]:.2f} before, {run.load[1]:.2f} after"
    rows = "\n".join(f"| {k} | {v} |" for k, v in [*run.machine, ("Load average (1 min)", load)])
    return f"| Machine | |\n|---|---|\n{rows}"


def _cell(summary: Summary | None, field: str) -> str:
    return f"{getattr(summary, field):.1f}" if summary else "—"


def _metric_table(metric: str, title: str, results: Sequence[Result]) -> str:
    lines = [f"### {title}", "", "| System | n | p50 | p90 | p99 | max |", "|---|--:|--:|--:|--:|--:|"]
    for r in results:
        s = None if r.skipped else r.summary(metric)
        n = str(s.n) if s else "skipped" if r.skipped else "n/a"
        cells = " | ".join(_cell(s, f) for f in ("p50", "p90", "p99", "max"))
        lines.append(f"| {_name(r)} | {n} | {cells} |")
    return "\n".join(lines)


def _name(r: Result) -> str:
    return f"{r.label} {r.version}".strip()


def _stage_table(run: Run, results: Sequence[Result]) -> str:
    with_stages = [r for r in results if r.stages and not r.skipped]
    if not with_stages:
        return ""
    head = "| Stage (median) | " + " | ".join(SHORT_NAMES.get(r.key, r.label) for r in with_stages) + " |"
    lines = [
        "### Where Outpost's dispatch time goes",
        "",
        "From the build's own timestamps, given by the API to the millisecond, and `claimed_at` read from the "
        "control plane's SQLite file. Medians of each stage, so they need not add up to the median total.",
        "",
        head,
        "|---|" + "--:|" * len(with_stages),
    ]
    for key, label in run.stages:
        cells = " | ".join(_fmt(median(r.stages.get(key, []))) for r in with_stages)
        lines.append(f"| `{key}`: {label} | {cells} |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _notes(results: Sequence[Result]) -> str:
    lines = [f"- **{r.label} was skipped**: {r.skipped}" for r in results if r.skipped]
    loads = [f"{SHORT_NAMES.get(r.key, r.label)} {r.load:.2f}" for r in results if r.load is not None]
    if loads:
        lines.append("- 1-minute load average as each system's measured builds ended: " + ", ".join(loads))
    lines += [f"- {r.label}: {note}" for r in results for note in r.notes]
    return "### Notes\n\n" + "\n".join(lines) if lines else ""
