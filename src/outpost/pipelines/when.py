"""Whether a step's `when` lets it run: branch rules, the states of other steps and condition expressions.

Pure functions; the engine supplies the branch, variable substitution, identifier lookup and step states.
A `when` that validation would refuse (a bad /regex/, an unknown `on` state, a part that is not a mapping)
raises ConditionError; an expression that cannot be evaluated is false, with the reason in the verdict.

Choices where Codefresh's documentation is silent:
- no branch at all (a build without a git revision): `branch.only` refuses it, `branch.ignore` has nothing
  to ignore; an empty `only` or `ignore` list imposes nothing;
- `ignore` wins over `only` when a branch matches both;
- `on: [finished]` also counts an approval step's `approved` and `denied`, its ways of finishing;
  `on: [terminating]` is met by `terminating` or `terminated`;
- an empty `all` or `any` group imposes nothing;
- a state the engine reports that is not one of the final ones (`pending-approval`, say) is "still running".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from outpost.pipelines.expressions import ConditionError, Lookup, check

Verdict = Literal["run", "skip", "wait"]

# What each `on:` state is met by, among the states the engine reports (`error` is a failure).
_MET_BY: dict[str, frozenset[str]] = {
    "success": frozenset({"success"}),
    "failure": frozenset({"failure", "error"}),
    "skipped": frozenset({"skipped"}),
    "finished": frozenset({"success", "failure", "error", "skipped", "approved", "denied"}),
    "pending": frozenset({"pending"}),
    "running": frozenset({"running", "pending-approval"}),
    "terminating": frozenset({"terminating", "terminated"}),
    "terminated": frozenset({"terminated"}),
    "approved": frozenset({"approved"}),
    "denied": frozenset({"denied"}),
}
ON_STATES = frozenset(_MET_BY)
FINAL_STATES = frozenset({"success", "failure", "error", "skipped", "terminated", "approved", "denied"})
_JS_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "g": 0, "u": 0, "y": 0}
_CLIP = 200  # characters of an expression quoted in a reason


@dataclass(frozen=True)
class WhenResult:
    """What to do with the step now; `reason` is a sentence for its log."""

    verdict: Verdict
    reason: str


# --- branches ------------------------------------------------------------------------------------------


def compile_regex(text: str) -> re.Pattern[str]:
    """A branch rule as a pattern to `.search()` with: `/pattern/flags` (JavaScript flags i, m, s; g, u and
    y are accepted and change nothing) or a plain name, which must then match exactly."""
    if not text.startswith("/"):
        return re.compile(r"\A" + re.escape(text) + r"\Z")
    close = text.rfind("/")
    if close == 0:
        raise ConditionError(f"'{_clip(text)}' starts a regular expression but has no closing /")
    pattern, flags = text[1:close], text[close + 1 :]
    value = 0
    for flag in flags:
        if flag not in _JS_FLAGS:
            raise ConditionError(f"'{_clip(text)}' has an unknown flag '{flag}' (use i, m, s, g, u or y)")
        if flags.count(flag) > 1:
            raise ConditionError(f"'{_clip(text)}' repeats the flag '{flag}'")
        value |= _JS_FLAGS[flag]
    try:
        return re.compile(pattern, value)
    except (re.error, RecursionError, OverflowError, ValueError) as error:
        raise ConditionError(f"'{_clip(text)}' is not a valid regular expression ({error})") from None


def branch_allows(rules: Mapping[str, Any], branch: str | None) -> tuple[bool, str]:
    """Whether `branch: {only, ignore}` lets `branch` through, and why. Raises ConditionError for a bad rule.

    No branch (None or empty) is refused by `only` and let through by `ignore`.
    """
    only, ignore = _rules(rules, "only"), _rules(rules, "ignore")
    if not branch:
        if only:
            return False, "there is no branch, and branch.only allows only the branches it lists"
        return True, "there is no branch"
    if hit := _first_match(ignore, branch):
        return False, f"branch '{branch}' {_matches(hit)} in branch.ignore"
    if not only:
        return True, f"branch '{branch}' is not ignored"
    if hit := _first_match(only, branch):
        return True, f"branch '{branch}' {_matches(hit)} in branch.only"
    return False, f"branch '{branch}' is not in branch.only"


def _rules(rules: Mapping[str, Any], name: str) -> list[str]:
    value = rules.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str | int | float) for item in value):
        raise ConditionError(f"branch.{name} must be a list of branch names or /regular expressions/")
    return [str(item) for item in value]


def _first_match(rules: list[str], branch: str) -> str | None:
    return next((rule for rule in rules if compile_regex(rule).search(branch)), None)


def _matches(rule: str) -> str:
    return f"matches {rule}" if rule.startswith("/") else "is"


# --- step states ---------------------------------------------------------------------------------------

_Outcome = Literal["yes", "no", "later"]  # holds now / can never hold / may hold later


def _step_holds(entry: object, step_state: Callable[[str], str | None]) -> tuple[_Outcome, str]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise ConditionError("each entry of when.steps needs a step `name`")
    name: str = entry["name"]
    wanted = entry.get("on") or ["success"]
    wanted = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(wanted, list) or any(state not in ON_STATES for state in wanted):
        raise ConditionError(f"when.steps: `on` of step '{name}' must list states among {', '.join(_MET_BY)}")
    needed = " or ".join(wanted)
    state = step_state(name)
    if state is None:
        return "no", f"there is no step '{name}'"
    if any(state in _MET_BY[on] for on in wanted):
        return "yes", f"step '{name}' is {state}"
    if state not in FINAL_STATES and _reachable(state, wanted):
        return "later", f"step '{name}' is {state}, not yet {needed}"
    ended = "finished as" if state in FINAL_STATES else "is"
    return "no", f"step '{name}' {ended} {state}, not {needed}"


def _reachable(state: str, wanted: Iterable[str]) -> bool:
    """Whether a step in a state that is not final can still reach one of the `on` states."""
    if state == "pending":
        return True
    # Past pending there is no going back; every other state, running included, only moves on.
    return any(on != "pending" for on in wanted)


def _combine(results: list[tuple[_Outcome, str]], *, every: bool, group: str) -> tuple[_Outcome, str]:
    """All of `results` (`every`) or at least one; with the reason of the part that decides."""
    if not results:
        return "yes", f"{group} is empty"
    if every:
        for outcome in ("no", "later"):
            if decisive := [reason for result, reason in results if result == outcome]:
                return outcome, decisive[0]
        return "yes", "; ".join(reason for _, reason in results)
    if held := [reason for result, reason in results if result == "yes"]:
        return "yes", held[0]
    reasons = "; ".join(reason for _, reason in results)
    if any(result == "later" for result, _ in results):
        return "later", f"none of {group} holds yet: {reasons}"
    return "no", f"none of {group} holds: {reasons}"


def _steps_hold(spec: object, step_state: Callable[[str], str | None]) -> tuple[_Outcome, str]:
    if isinstance(spec, list):
        return _combine([_step_holds(e, step_state) for e in spec], every=True, group="when.steps")
    if not isinstance(spec, Mapping) or not set(spec) <= {"all", "any"}:
        raise ConditionError("when.steps must be a list of {name, on}, or a mapping with `all` and/or `any`")
    parts: list[tuple[_Outcome, str]] = []
    for group, every in (("all", True), ("any", False)):
        entries = spec.get(group)
        if entries is not None and not isinstance(entries, list):
            raise ConditionError(f"when.steps.{group} must be a list of {{name, on}}")
        if entries is not None:
            results = [_step_holds(e, step_state) for e in entries]
            parts.append(_combine(results, every=every, group=f"when.steps.{group}"))
    return _combine(parts, every=True, group="when.steps")


# --- condition expressions -----------------------------------------------------------------------------


def _conditions_hold(spec: object, substitute: Callable[[str], str], lookup: Lookup) -> tuple[bool, str]:
    if not isinstance(spec, Mapping) or not set(spec) <= {"all", "any"}:
        raise ConditionError("when.condition must be a mapping with `all` and/or `any`")
    reasons: list[str] = []
    for group in ("all", "any"):
        expressions = spec.get(group)
        if expressions is None:
            continue
        if not isinstance(expressions, Mapping):
            raise ConditionError(f"when.condition.{group} must map names to expressions")
        results = [_expression_holds(str(name), text, substitute, lookup) for name, text in expressions.items()]
        if group == "all" and (failed := [reason for ok, reason in results if not ok]):
            return False, failed[0]
        if group == "any" and results and not any(ok for ok, _ in results):
            return False, "no condition in condition.any is true: " + "; ".join(reason for _, reason in results)
        reasons += [reason for ok, reason in results if ok][:1]
    return True, "; ".join(reasons) or "there are no conditions"


def _expression_holds(name: str, text: object, substitute: Callable[[str], str], lookup: Lookup) -> tuple[bool, str]:
    expression = substitute(_as_text(text))
    ok, why = check(expression, lookup)
    if ok:
        return True, f"condition '{name}' is true"
    if why is not None:
        return False, f"condition '{name}' could not be evaluated: {why} → false"
    return False, f"condition '{name}' is false: {_clip(expression, _CLIP)}"


def _as_text(value: object) -> str:
    """An expression as tevale reads one: `true` written unquoted in YAML is the text "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


# --- the whole `when` ----------------------------------------------------------------------------------


def evaluate_when(
    when: Mapping[str, Any] | None,
    *,
    branch: str | None,
    substitute: Callable[[str], str],
    lookup: Lookup,
    step_state: Callable[[str], str | None],
    final: bool,
) -> WhenResult:
    """Run, skip or wait, and why.

    The branch is looked at first, then `steps`, then `condition` (expressions are substituted with
    `substitute` first). "wait" is answered only when `final` is false (parallel mode, while other steps
    may still change things): when a step named in `steps` can still reach a wanted state, and when a
    condition is false, since expressions may read step results and exported variables that change.
    A branch that is refused, or a step that ended in a state other than the wanted ones, skips at once.
    With `final` true nothing can change any more, so whatever does not hold skips.
    """
    if not when:
        return WhenResult("run", "there is no when")
    if not isinstance(when, Mapping):
        raise ConditionError("when must be a mapping of `branch`, `condition` and `steps`")
    if unknown := set(when) - {"branch", "condition", "steps"}:
        raise ConditionError(f"unknown part of when: {', '.join(sorted(map(str, unknown)))}")
    reasons: list[str] = []
    if (rules := when.get("branch")) is not None:
        if not isinstance(rules, Mapping):
            raise ConditionError("when.branch must be a mapping with `only` and/or `ignore`")
        allowed, why = branch_allows(rules, branch)
        if not allowed:
            return WhenResult("skip", why)
        reasons.append(why)
    steps: tuple[_Outcome, str] = ("yes", "")
    if (spec := when.get("steps")) is not None:
        steps = _steps_hold(spec, step_state)
        if steps[0] == "no":
            return WhenResult("skip", steps[1])
        reasons.append(steps[1])
    holds, why = True, ""
    if (spec := when.get("condition")) is not None:
        holds, why = _conditions_hold(spec, substitute, lookup)
        reasons.append(why)
    if steps[0] == "yes" and holds:
        return WhenResult("run", "; ".join(reasons) or "nothing in when applies")
    blocking = steps[1] if steps[0] == "later" else why
    return WhenResult("skip" if final else "wait", blocking)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
