"""The conditions of steps, over a running build: whether a step runs (its `when`) and whether a set of steps
succeeded (`success_criteria`). The expression language they use is `pipelines/expressions.py`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outpost.engine.results import FAILED
from outpost.engine.state import BuildState
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import substitute
from outpost.pipelines.when import evaluate_when


def when(state: BuildState, step: Step, *, final: bool) -> str | None:
    """None when the step may run; "wait" (only when not final); else why it is skipped."""
    if step.when is None:
        return None
    return evaluate(state, step.when, final=final)


def evaluate(state: BuildState, condition: Mapping[str, Any], *, final: bool) -> str | None:
    scope_vars = state.scope_vars()
    result = evaluate_when(
        condition,
        branch=state.variables.get("CF_BRANCH") or state.branch,
        substitute=lambda text: substitute(text, scope_vars),
        lookup=lambda name: _lookup(state, name),
        step_state=state.states.get,
        final=final,
    )
    if result.verdict == "run":
        return None
    if result.verdict == "wait":
        return "wait"
    return result.reason


def criteria(state: BuildState, spec: Mapping[str, Any] | None, steps: list[Step]) -> tuple[bool, str]:
    """`success_criteria` over a set of steps: by default none of them may have failed."""
    spec = spec or {}
    names = [s.name for s in steps]
    rules = spec.get("steps") or {}
    if rules.get("only"):
        names = [n for n in names if n in set(rules["only"])]
    if rules.get("ignore"):
        names = [n for n in names if n not in set(rules["ignore"])]
    failed = [n for n in names if state.states.get(n) in FAILED or state.states.get(n) == "terminated"]
    if failed:
        return False, "steps failed: " + ", ".join(failed)
    if condition := spec.get("condition"):
        result = evaluate(state, {"condition": condition}, final=True)
        if result is not None:
            return False, f"success_criteria: {result}"
    return True, ""


def _lookup(state: BuildState, name: str) -> object:
    """An identifier in a condition: `workflow.result`, `steps.X.<member>` or a variable."""
    if name == "workflow.result":
        return state.workflow
    if name.startswith("steps.") and name.count(".") >= 2:
        step, member = name[len("steps.") :].rsplit(".", 1)
        if member == "result" and step in state.states:
            return state.states[step]
    scope_vars = state.scope_vars()
    if name in scope_vars:
        return scope_vars[name]
    raise KeyError(name)
