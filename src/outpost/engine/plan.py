"""Turning a parsed pipeline into the steps a build runs: `scale` and `matrix` become parallel steps.

The parser checks every variant a `scale` or `matrix` step runs as but keeps the step as written; here
each such step becomes a `parallel` step whose children are the variants, so the engine has one way of
running steps side by side and the plan the runner reports lists every variant by name.

Names: a `scale` child keeps the name it was given. A `matrix` variant is named `<step>_<n>`, `n`
counting from 1 in the order of the Cartesian product (the last field varies fastest), unless that
name is taken, in which case more `_` are added until it is free.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from typing import Any

from outpost.pipelines.spec import Pipeline, Step
from outpost.wire import StepPlan

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
