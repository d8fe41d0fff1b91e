"""Turning a parsed pipeline into the steps a build runs: `scale` and `matrix` become parallel steps.

The parser checks every variant a `scale` or `matrix` step runs as but keeps the step as written; here
each such step becomes a `parallel` step whose children are the variants, so the engine has one way of
running steps side by side and the plan the runner reports lists every variant by name.

Names: a `scale` child keeps the name it was given. A `matrix` variant is named `<step>_<n>`, `n`
counting from 1 in the order of the Cartesian product (the last field varies fastest), unless that
name is taken, in which case more `_` are added until it is free.

`planned` keeps the last pipelines it parsed by their text: a runner builds the same few pipelines over and over,
and the parse (~0.8 ms for one step, ~7 ms for twenty) was the largest part of its hand-over (docs/benchmarks.md).
"""

from __future__ import annotations

import collections
import copy
import itertools
from dataclasses import replace
from typing import Any

from outpost.pipelines.parsing import load_pipeline
from outpost.pipelines.spec import Pipeline, Step
from outpost.wire import StepPlan

# What the cache of parsed pipelines may hold: this many pipelines, and this many characters of YAML in all (a
# pipeline's parsed form is a few times its text). A larger file is parsed every time.
PLANS_KEPT = 32
PLANS_CHARS = 1 << 20


class _Plans:
    """Expanded pipelines by (text, file name), least recently used first. Parsing reads nothing but those two
    (variables are substituted when a step runs), so one build's values cannot reach another's through here; each
    build gets its own deep copy, so nothing a build does to its pipeline reaches the next one either."""

    def __init__(self, kept: int = PLANS_KEPT, chars: int = PLANS_CHARS) -> None:
        self.kept, self.chars = kept, chars
        self._plans: collections.OrderedDict[tuple[str, str], Pipeline] = collections.OrderedDict()
        self._size = 0  # characters of YAML held

    def get(self, yaml: str, file: str) -> Pipeline:
        key = (yaml, file)
        plan = self._plans.get(key)
        if plan is None:
            plan = expand(load_pipeline(yaml, file))  # an invalid pipeline raises and is not kept
            self._keep(key, plan)
        else:
            self._plans.move_to_end(key)
        return copy.deepcopy(plan)  # ~20 times cheaper than the parse

    def _keep(self, key: tuple[str, str], plan: Pipeline) -> None:
        if len(key[0]) > self.chars // 4:
            return
        self._plans[key] = plan
        self._size += len(key[0])
        while len(self._plans) > self.kept or self._size > self.chars:
            (old, _), _ = self._plans.popitem(last=False)
            self._size -= len(old)

    def clear(self) -> None:
        self._plans.clear()
        self._size = 0


_plans = _Plans()


def planned(yaml: str, file: str = "codefresh.yml") -> Pipeline:
    """The pipeline a build runs: `yaml` parsed (PipelineError if it is invalid) and expanded, the build's own copy."""
    return _plans.get(yaml, file)


_PARALLEL_ONLY = ("type", "scale", "matrix", "title", "description", "stage", "when", "fail_fast", "timeout")


def expand(pipeline: Pipeline) -> Pipeline:
    """The same pipeline with every `scale`/`matrix` step replaced by a parallel step of its variants."""
    taken = {s.name for s in pipeline.all_steps()}
    return replace(pipeline, steps=[_expand(s, taken) for s in pipeline.steps])


def _expand(step: Step, taken: set[str]) -> Step:
    if step.steps:
        return replace(step, steps=[_expand(s, taken) for s in step.steps])
    if "scale" in step.fields:
        children = [
            _variant(step, name, overrides if isinstance(overrides, dict) else {})
            for name, overrides in (step.fields.get("scale") or {}).items()
        ]
    elif "matrix" in step.fields:
        matrix: dict[str, list[Any]] = step.fields.get("matrix") or {}
        keys = list(matrix)
        children = []
        for n, combo in enumerate(itertools.product(*(matrix[k] for k in keys)), start=1):
            name = f"{step.name}_{n}"
            while name in taken:
                name += "_"
            taken.add(name)
            children.append(_variant(step, name, dict(zip(keys, combo, strict=True)), combine=False))
    else:
        return step
    fields = {k: v for k, v in step.fields.items() if k in _PARALLEL_ONLY}
    fields["type"] = "parallel"
    return replace(step, type="parallel", fields=fields, steps=children, when=step.when)


def _variant(step: Step, name: str, overrides: dict[str, Any], *, combine: bool = True) -> Step:
    """One variant: the step's own fields with the overrides on top (`environment` lists combined for
    `scale`; a `matrix` value replaces the field)."""
    fields = {k: copy.deepcopy(v) for k, v in step.fields.items() if k not in ("scale", "matrix", "when", "stage")}
    for key, value in overrides.items():
        if key == "environment" and combine:
            fields["environment"] = [*(fields.get("environment") or []), *(value or [])]
        else:
            fields[key] = copy.deepcopy(value)
    title = overrides.get("title")
    return replace(
        step,
        name=name,
        fields=fields,
        title=str(title) if title is not None else step.title,
        when=None,
        stage=step.stage,
        steps=[],
    )


def plan_of(pipeline: Pipeline) -> list[StepPlan]:
    """What the runner tells the control plane it will run: every step, parents before children."""
    plan: list[StepPlan] = []

    def walk(steps: list[Step], parent: str | None) -> None:
        for s in steps:
            plan.append(StepPlan(name=s.name, title=s.title, stage=s.stage, type=s.type, parent=parent))
            walk(s.steps, s.name)

    walk(pipeline.steps, None)
    return plan
