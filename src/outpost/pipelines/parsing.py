"""Reads codefresh.yml text into a `Pipeline`, or raises `PipelineError` listing every problem found.

The YAML comes from `yamlnodes` as located nodes plus plain values; what each mapping may hold is checked
with `fields`. This module walks the file: the top level, then each step, giving steps their names, types,
stages, fail-fast and timeouts, lifting `arguments`, renaming legacy fields, and expanding `scale` and
`matrix` to check every variant a step runs as.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node, SequenceNode

from outpost.errors import PipelineError
from outpost.pipelines.fields import (
    COMMON_FIELDS,
    LEGACY_NAMES,
    MODES,
    STEP_TYPES,
    TOP_LEVEL_FIELDS,
    TYPE_CHECKS,
    TYPED_STEP,
    Fields,
    StepKind,
    check_hooks,
    check_retry,
    check_success_criteria,
    check_when,
    describe,
)
from outpost.pipelines.spec import Location, Pipeline, Step
from outpost.pipelines.variables import is_variable_ref
from outpost.pipelines.yamlnodes import TOO_DEEP, Document, Entries, TooLarge, clip, compose, is_null

__all__ = ["COMMON_FIELDS", "STEP_TYPES", "TOP_LEVEL_FIELDS", "StepKind", "load_pipeline", "summary"]

# --- steps ---------------------------------------------------------------------------------------------

_NAME_FORBIDDEN = ".#$[]/"  # `/` too: step names appear in URLs
_MAX_NAME = 150
_DURATION = re.compile(r"(\d*\.?\d*)([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass
class _Context:
    """What every step is checked against: the pipeline's stages and mode, and the names taken so far."""

    doc: Document
    stages: list[str]
    mode: str
    fail_fast: bool | str
    names: dict[str, Node] = field(default_factory=dict)

    def claim(self, key: Node, name: str) -> None:
        bad = sorted({c for c in name if c in _NAME_FORBIDDEN})
        if not name.strip():
            self.doc.problem(key, "a step name cannot be empty")
        elif len(name) > _MAX_NAME:
            self.doc.problem(key, f"step name '{clip(name)}' is longer than {_MAX_NAME} characters")
        elif bad:
            shown = " ".join(bad)
            self.doc.problem(key, f"step name '{name}' contains {shown} (names cannot contain . # $ [ ] /)")
        if name in self.names:
            first = self.names[name].start_mark.line + 1
            self.doc.problem(key, f"step name '{name}' is already used on line {first}")
        else:
            self.names[name] = key


def _read_steps(owner: Fields, ctx: _Context, parent: Step | None = None) -> list[Step]:
    if "steps" not in owner:
        owner.require("steps")
        return []
    if owner.values["steps"] is None or owner.values["steps"] == {}:
        owner.problem(owner.node("steps"), f"`{owner.name_of('steps')}` needs at least one step")
        return []
    if parent is not None and isinstance(owner.values["steps"], list):
        steps = _listed_steps(owner, parent)
    else:
        steps = owner.sub("steps")
    if steps is None:
        return []
    read = [_read_step(steps, name, ctx, parent) for name in steps.entries]
    return [step for step in read if step is not None]


def _listed_steps(owner: Fields, parent: Step) -> Fields | None:
    """A parallel step's `steps` written as a list of steps (seen in public repositories): each is named
    after its `title` (else `<parent>_<position>`), made unique, and read as if it were written as a mapping."""
    node = owner.node("steps")
    if not isinstance(node, SequenceNode):
        owner.wrong("steps", "a mapping of steps, or a list of steps with titles")
        return None
    entries: Entries = {}
    values: dict[str, Any] = {}
    for index, (item, value) in enumerate(zip(node.value, owner.values["steps"], strict=True), start=1):
        title = value.get("title") if isinstance(value, dict) else None
        base = _name_from(title) if isinstance(title, str) else ""
        name = first = base or f"{parent.name}_{index}"
        again = 2
        while name in entries:  # two steps with the same title
            name, again = f"{first}_{again}", again + 1
        entries[name] = (item, item)
        values[name] = value
    return Fields(owner.doc, node, entries, values, owner.owner, owner.name_of("steps"))


def _name_from(title: str) -> str:
    """A step name from a title: `Unit tests (fast)` becomes `unit_tests_fast`."""
    return re.sub(r"[^a-z0-9_-]+", "_", title.lower()).strip("_")[:_MAX_NAME]


def _read_step(steps: Fields, name: str, ctx: _Context, parent: Step | None) -> Step | None:
    key, node = steps.entries[name]
    ctx.claim(key, name)
    values = steps.values[name]
    if not isinstance(node, MappingNode) or not isinstance(values, dict):
        ctx.doc.problem(node, f"step '{name}' must be a mapping of fields, not {describe(values)}")
        return None
    fields = Fields(ctx.doc, key, dict(ctx.doc.entries(node)), dict(values), f"step '{name}'")
    kind = _read_type(fields)
    if kind is None:
        return None
    _merge_arguments(fields, keep=kind not in STEP_TYPES)
    _rename_legacy(fields)
    if parent is not None and kind == "pending-approval":
        fields.problem(fields.node("type"), "a parallel step cannot contain a pending-approval step")
    _check_fields(fields, kind, ctx)
    step = Step(
        name=name,
        type=kind,
        fields=fields.values,
        location=Location(key.start_mark.line + 1, key.start_mark.column + 1),
        title=fields.string("title"),
        description=fields.string("description"),
        stage=_read_stage(fields, ctx),
        fail_fast=_read_fail_fast(fields, ctx),
        timeout=_read_timeout(fields, kind, parent),
        when=fields.values["when"] if isinstance(fields.values.get("when"), dict) else None,
    )
    if kind == "parallel":
        step.steps = _read_steps(fields, ctx, step)
    return step


def _read_type(step: Fields) -> str | None:
    if "type" not in step:
        return "freestyle"
    kind = step.values["type"]
    if isinstance(kind, str) and (kind in STEP_TYPES or is_variable_ref(kind) or TYPED_STEP.fullmatch(kind)):
        _warn_near_miss(step, kind)
        return kind
    if isinstance(kind, str):
        step.problem(
            step.node("type"),
            f"unknown step type '{clip(kind)}' (use a built-in type or `[account/]name[:version]`)",
        )
    else:
        step.wrong("type", "a step type such as freestyle")
    return None


def _warn_near_miss(step: Fields, kind: str) -> None:
    """`type: freestlye` is a valid name for a step from a catalogue, but most likely a typo of a built-in."""
    if kind in STEP_TYPES or "/" in kind or ":" in kind or is_variable_ref(kind):
        return
    close = difflib.get_close_matches(kind, sorted(STEP_TYPES), n=1, cutoff=0.75)
    if close:
        step.doc.warn(
            step.node("type"),
            f"{step.owner}: unknown step type '{clip(kind)}' — did you mean '{close[0]}'? "
            "(read as a step type from a catalogue)",
        )


def _merge_arguments(step: Fields, *, keep: bool) -> None:
    """Lift `arguments` into the step; typed steps keep them too, as their step-type manifest takes them."""
    arguments = step.sub("arguments")
    if arguments is None:
        return
    for name, pair in arguments.entries.items():
        if keep and name == "timeout":
            continue  # a typed step's own `timeout` argument is not the step's timeout
        step.entries[name] = pair
        step.values[name] = arguments.values[name]
    if not keep:
        del step.entries["arguments"], step.values["arguments"]


def _rename_legacy(step: Fields) -> None:
    for old, new in LEGACY_NAMES.items():
        if old in step and new in step:
            step.problem(step.key(old), f"`{old}` and `{new}` are the same field; keep only `{new}`")
        elif old in step:
            step.entries[new] = step.entries.pop(old)
            step.values[new] = step.values.pop(old)


def _check_fields(step: Fields, kind: str, ctx: _Context) -> None:
    spec = STEP_TYPES.get(kind, StepKind(None))
    if spec.fields is not None:
        step.only(COMMON_FIELDS | spec.fields, f" for a {kind} step")
    if check := TYPE_CHECKS.get(kind):
        check(step)
    step.flag("strict_fail_fast")
    if when := step.sub("when"):
        check_when(when)
    if retry := step.sub("retry"):
        check_retry(retry)
    if hooks := step.sub("hooks"):
        check_hooks(hooks)
    for name in ("on_success", "on_fail", "on_finish"):
        if post := step.sub(name):
            post.only(("metadata", "annotations"))
    _check_required(step, kind, spec, _variants(step, kind, spec, ctx))


def _variants(step: Fields, kind: str, spec: StepKind, ctx: _Context) -> list[tuple[Node, str, set[str]]]:
    """The field sets a step runs with: its own (plus any `matrix` field), or one per `scale` child."""
    own = set(step.entries)
    if "scale" not in step and "matrix" not in step:
        return [(step.at, step.owner, own)]
    if ctx.mode == "parallel":
        implicit = "scale" if "scale" in step else "matrix"
        step.problem(step.key(implicit), f"`{implicit}` cannot be used with `mode: parallel`")
    if "scale" in step and "matrix" in step:
        step.problem(step.key("matrix"), "use either `scale` or `matrix`, not both")
    allowed = None if spec.fields is None else COMMON_FIELDS | spec.fields
    if matrix := step.sub("matrix"):
        _check_matrix(matrix, allowed)
        own |= set(matrix.entries)
    scale = step.sub("scale")
    if scale is None:
        return [(step.at, step.owner, own)]
    return [
        (scale.key(child), f"{step.owner} (scale '{child}')", own | fields)
        for child, fields in _scale_children(scale, ctx, allowed)
    ]


def _check_matrix(matrix: Fields, allowed: Collection[str] | None) -> None:
    if allowed is not None:
        matrix.only(allowed)
    if not matrix.entries:
        matrix.problem(matrix.at, "`matrix` needs at least one field")
    for name in matrix.entries:
        if not isinstance(matrix.values[name], list) or not matrix.values[name]:
            matrix.wrong(name, "a non-empty list of values")


def _scale_children(scale: Fields, ctx: _Context, allowed: Collection[str] | None) -> list[tuple[str, set[str]]]:
    if not scale.entries:
        scale.problem(scale.at, "`scale` needs at least one step")
    children: list[tuple[str, set[str]]] = []
    for child in scale.entries:
        ctx.claim(scale.key(child), child)
        overrides = scale.sub(child)
        if overrides is not None and allowed is not None:
            overrides.only(allowed)
        children.append((child, set(overrides.entries) if overrides else set()))
    return children


def _check_required(step: Fields, kind: str, spec: StepKind, variants: list[tuple[Node, str, set[str]]]) -> None:
    for at, owner, present in variants:
        for name in spec.required:
            if name not in present:
                step.doc.problem(at, f"{owner}: `{name}` is required for a {kind} step")


def _read_stage(step: Fields, ctx: _Context) -> str | None:
    stage = step.string("stage")
    if stage is not None and ctx.stages and stage not in ctx.stages:
        declared = ", ".join(ctx.stages)
        step.problem(step.node("stage"), f"stage '{clip(stage)}' is not one of the pipeline's stages ({declared})")
    return stage


def _read_fail_fast(step: Fields, ctx: _Context) -> bool | str:
    value = step.flag("fail_fast")
    return ctx.fail_fast if value is None else value


def _read_timeout(step: Fields, kind: str, parent: Step | None) -> float | None:
    if kind in ("pending-approval", "deploy"):
        return None  # their `timeout` is an approval wait or a rollout wait, checked with the type
    if "timeout" not in step:
        return parent.timeout if parent else None  # a parallel step's timeout reaches its steps
    value = step.values["timeout"]
    if value is None or (type(value) in (int, float) and value == 0):
        return None
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(1).strip(".") == "":
        step.wrong("timeout", "a duration such as 45m, 30s or 1.5h (0 or empty for none)")
        return None
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    return seconds or None


# --- the pipeline --------------------------------------------------------------------------------------


def load_pipeline(text: str | bytes, file: str = "codefresh.yml") -> Pipeline:
    """Parse and validate a codefresh.yml; raise PipelineError with every problem found."""
    doc = Document(file)
    pipeline = None
    root = compose(text, doc)
    if root is not None and not is_null(root):
        try:
            pipeline = _read_pipeline(root, doc)
        except TooLarge as exc:
            doc.problem_at(1, 1, str(exc))
        except RecursionError:
            doc.problem_at(1, 1, TOO_DEEP)
    elif not doc.problems:
        doc.problem_at(1, 1, "the file is empty; a pipeline needs at least `version` and `steps`")
    if pipeline is None or doc.problems:
        raise PipelineError(doc.problems)
    pipeline.warnings = doc.warnings
    return pipeline


def _read_pipeline(root: Node, doc: Document) -> Pipeline | None:
    values = doc.plain(root)
    if not isinstance(root, MappingNode) or not isinstance(values, dict):
        doc.problem(root, f"the file must be a mapping with `version` and `steps`, not {describe(values)}")
        return None
    top = Fields(doc, root, doc.entries(root), values)
    top.only(TOP_LEVEL_FIELDS, " at the top level")
    version = _read_version(top)
    mode = top.choice("mode", MODES) or "sequential"
    stages = top.strings("stages") or []
    fail_fast = top.flag("fail_fast")
    strict_fail_fast = top.flag("strict_fail_fast")
    top.choice("build_version", ("v1", "v2"))
    hooks = top.sub("hooks")
    if hooks:
        check_hooks(hooks)
    if criteria := top.sub("success_criteria"):
        check_success_criteria(criteria)
    services = top.sub("services")
    ctx = _Context(doc, stages, mode, True if fail_fast is None else fail_fast)
    return Pipeline(
        version=version,
        steps=_read_steps(top, ctx),
        mode=mode,
        stages=stages,
        fail_fast=ctx.fail_fast,
        strict_fail_fast=strict_fail_fast,
        hooks=hooks.values if hooks else {},
        file=doc.file,
        success_criteria=criteria.values if criteria else None,
        services=services.values if services else {},
    )


def _read_version(top: Fields) -> str:
    if "version" not in top:
        top.problem(top.at, "`version` is required (version: '1.0')")
        return "1.0"
    value = top.values["version"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value in ("1.0", "1") or (number and value == 1):
        return "1.0"
    top.wrong("version", "'1.0'")
    return "1.0"


def summary(p: Pipeline) -> str:
    """One line about a pipeline, such as `4 steps (3 top-level), 2 stages, mode sequential`."""
    every, stages = len(p.all_steps()), len(p.stages)
    return (
        f"{every} step{'s' * (every != 1)} ({len(p.steps)} top-level), "
        f"{stages} stage{'s' * (stages != 1)}, mode {p.mode}"
    )
