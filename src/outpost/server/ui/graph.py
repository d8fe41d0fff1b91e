"""A build's steps as a graph for its page: columns that run one after the other, and in each column what runs
side by side (a parallel step's children; in `mode: parallel`, the steps that wait on the same earlier ones).

Read from the YAML the build ran (what waits on what) and the build's step rows (states, times, and the
children of parallel, `scale` and `matrix` steps as they ran)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline
from outpost.server.models import Build, Step
from outpost.wire import SYSTEM_STREAM


@dataclass
class Node:
    step: Step
    children: list[Step] = field(default_factory=list)  # run side by side inside it


@dataclass
class Graph:
    columns: list[list[Node]]
    parallel_mode: bool


def graph_of(build: Build, steps: list[Step]) -> Graph | None:
    """None when there is nothing to draw: no YAML yet, a YAML that does not parse, or no steps reported."""
    try:
        pipeline = load_pipeline(build.yaml, build.yaml_file) if build.yaml else None
    except PipelineError:
        return None
    rows = {s.name: s for s in steps if s.name != SYSTEM_STREAM}
    if pipeline is None or not rows:
        return None
    top = [s for s in pipeline.steps if s.name in rows]
    if pipeline.mode == "parallel":
        level: dict[str, int] = {}

        def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
            if name not in level:
                step = next(s for s in top if s.name == name)
                needs = [n for n in _waits_on(step.when or {}) if n in {t.name for t in top} and n not in seen]
                level[name] = 1 + max((depth(n, seen | {name}) for n in needs), default=-1)
            return level[name]

        columns: list[list[Node]] = []
        for s in top:
            at = depth(s.name)
            columns.extend([] for _ in range(at + 1 - len(columns)))
            columns[at].append(_node(rows, s.name))
        return Graph([c for c in columns if c], True)
    return Graph([[_node(rows, s.name)] for s in top], False)


def _node(rows: dict[str, Step], name: str) -> Node:
    return Node(rows[name], [s for s in rows.values() if s.parent == name])


def _waits_on(when: dict[str, Any]) -> list[str]:
    """The step names a `when.steps` rule names, however it nests them (a list, `all`, `any`)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("name"), str):
                found.append(value["name"])
            for key in ("all", "any"):
                walk(value.get(key))
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(when.get("steps"))
    return found
