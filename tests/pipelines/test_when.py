"""`when`: branch rules, step states (run, skip or wait), condition groups, and how validation reports them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from textwrap import dedent
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outpost.errors import PipelineError
from outpost.pipelines.expressions import MISSING, ConditionError
from outpost.pipelines.parsing import load_pipeline
from outpost.pipelines.variables import substitute
from outpost.pipelines.when import WhenResult, branch_allows, compile_regex, evaluate_when

VARIABLES = {"CF_BRANCH": "dev", "TARGET": "prod", "COUNT": "3"}


def decide(
    when: Mapping[str, Any] | None,
    *,
    branch: str | None = "dev",
    states: Mapping[str, str] | None = None,
    final: bool = True,
) -> WhenResult:
    known = dict(states or {})
    return evaluate_when(
        when,
        branch=branch,
        substitute=lambda text: substitute(text, VARIABLES),
        lookup=lambda name: (
            known.get(name.removeprefix("steps.").removesuffix(".result"), MISSING)
            if name.startswith("steps.")
            else MISSING
        ),
        step_state=known.get,
        final=final,
    )


# --- /regex/flags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "branch", "matches"),
    [
        ("master", "master", True),
        ("master", "master-2", False),
        ("master", "old-master", False),
        ("feature.x", "featureAx", False),  # a plain name is not a pattern
        ("/^FB-/", "FB-12", True),
        ("/^FB-/", "fb-12", False),
        ("/^FB-/i", "fb-12", True),
        ("/hotfix$/", "release-hotfix", True),
        ("/hotfix$/", "hotfix-2", False),
        ("/^release\\/\\d+/", "release/12", True),
        ("/a.b/", "a\nb", False),
        ("/a.b/s", "a\nb", True),
        ("/^b$/", "a\nb", False),
        ("/^b$/m", "a\nb", True),
        ("/dev/gu", "dev", True),
        ("/dev/y", "feature-dev", True),  # y changes nothing: branch rules test the whole name
        ("/a/b/", "a/b", True),  # the last / ends the pattern
    ],
)
def test_a_branch_rule_is_a_name_or_a_javascript_regex(rule: str, branch: str, matches: bool) -> None:
    assert (compile_regex(rule).search(branch) is not None) is matches


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("/^FB-/x", "'/^FB-/x' has an unknown flag 'x' (use i, m, s, g, u or y)"),
        ("/^FB-/ii", "'/^FB-/ii' repeats the flag 'i'"),
        (
            "/(unclosed/",
            "'/(unclosed/' is not a valid regular expression (missing ), unterminated subpattern at position 0)",
        ),
        ("/no-end", "'/no-end' starts a regular expression but has no closing /"),
    ],
)
def test_a_bad_regex_is_refused_with_the_reason(rule: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_regex(rule)
    assert str(caught.value) == message


def test_flags_become_python_flags() -> None:
    assert compile_regex("/x/ims").flags & (re.IGNORECASE | re.MULTILINE | re.DOTALL) == (
        re.IGNORECASE | re.MULTILINE | re.DOTALL
    )


# --- branch rules --------------------------------------------------------------------------------------

BRANCHES: list[tuple[dict[str, Any], str | None, tuple[bool, str]]] = [
    ({"only": ["master", "/^FB-/i"]}, "master", (True, "branch 'master' is in branch.only")),
    ({"only": ["master", "/^FB-/i"]}, "fb-login", (True, "branch 'fb-login' matches /^FB-/i in branch.only")),
    ({"only": ["master", "/^FB-/i"]}, "dev", (False, "branch 'dev' is not in branch.only")),
    ({"ignore": ["develop"]}, "develop", (False, "branch 'develop' is in branch.ignore")),
    ({"ignore": ["/^wip-/"]}, "wip-1", (False, "branch 'wip-1' matches /^wip-/ in branch.ignore")),
    ({"ignore": ["develop"]}, "main", (True, "branch 'main' is not ignored")),
    ({"only": ["/./"], "ignore": ["main"]}, "main", (False, "branch 'main' is in branch.ignore")),  # ignore wins
    ({"only": []}, "anything", (True, "branch 'anything' is not ignored")),  # an empty list imposes nothing
    ({}, "main", (True, "branch 'main' is not ignored")),
    ({"only": ["main"]}, None, (False, "there is no branch, and branch.only allows only the branches it lists")),
    ({"only": ["main"]}, "", (False, "there is no branch, and branch.only allows only the branches it lists")),
    ({"ignore": ["main"]}, None, (True, "there is no branch")),
    ({"only": [1.1]}, "1.1", (True, "branch '1.1' is in branch.only")),
]


@pytest.mark.parametrize(("rules", "branch", "expected"), BRANCHES)
def test_branch_rules_allow_or_refuse_with_the_reason(
    rules: dict[str, Any], branch: str | None, expected: tuple[bool, str]
) -> None:
    assert branch_allows(rules, branch) == expected


def test_a_branch_rule_that_is_not_a_list_is_an_error() -> None:
    with pytest.raises(ConditionError, match=r"^branch\.only must be a list"):
        branch_allows({"only": "main"}, "main")


# --- step states ---------------------------------------------------------------------------------------

STEP_CASES: list[tuple[list[str] | None, str, bool, str]] = [
    # on, state of step b, final, verdict
    (None, "success", False, "run"),  # success is the default
    (None, "failure", False, "skip"),
    (None, "running", False, "wait"),
    (None, "pending", False, "wait"),
    (None, "pending", True, "skip"),
    (["success"], "approved", False, "skip"),
    (["failure"], "failure", False, "run"),
    (["failure"], "error", False, "run"),  # an error is a failure
    (["failure"], "success", False, "skip"),
    (["skipped"], "skipped", False, "run"),
    (["finished"], "success", False, "run"),
    (["finished"], "failure", False, "run"),
    (["finished"], "skipped", False, "run"),
    (["finished"], "approved", False, "run"),
    (["finished"], "denied", False, "run"),
    (["finished"], "terminated", False, "skip"),
    (["finished"], "running", False, "wait"),
    (["success", "failure"], "failure", False, "run"),
    (["pending"], "pending", False, "run"),
    (["pending"], "running", False, "skip"),  # a running step never goes back to pending
    (["running"], "running", False, "run"),
    (["running"], "pending-approval", False, "run"),
    (["running"], "pending", False, "wait"),
    (["running"], "success", False, "skip"),
    (["terminated"], "terminated", False, "run"),
    (["terminating"], "terminated", False, "run"),
    (["terminating"], "terminating", False, "run"),
    (["approved"], "approved", False, "run"),
    (["approved"], "pending-approval", False, "wait"),
    (["approved"], "denied", False, "skip"),
    (["denied"], "denied", False, "run"),
]


@pytest.mark.parametrize(("on", "state", "final", "verdict"), STEP_CASES)
def test_a_step_condition_runs_skips_or_waits_by_the_state_of_that_step(
    on: list[str] | None, state: str, final: bool, verdict: str
) -> None:
    entry: dict[str, Any] = {"name": "b"} if on is None else {"name": "b", "on": on}
    assert decide({"steps": [entry]}, states={"b": state}, final=final).verdict == verdict


def test_the_reasons_say_which_step_is_in_which_state() -> None:
    when = {"steps": [{"name": "build", "on": ["success"]}]}
    assert decide(when, states={"build": "failure"}) == WhenResult(
        "skip", "step 'build' finished as failure, not success"
    )
    assert decide(when, states={"build": "running"}, final=False) == WhenResult(
        "wait", "step 'build' is running, not yet success"
    )
    assert decide(when, states={"build": "running"}) == WhenResult("skip", "step 'build' is running, not yet success")
    assert decide(when, states={"build": "success"}) == WhenResult("run", "step 'build' is success")
    assert decide(when, states={}) == WhenResult("skip", "there is no step 'build'")


def test_a_list_of_steps_needs_all_of_them() -> None:
    when = {"steps": [{"name": "a"}, {"name": "b", "on": ["failure"]}]}
    assert decide(when, states={"a": "success", "b": "failure"}).verdict == "run"
    assert decide(when, states={"a": "running", "b": "failure"}, final=False).verdict == "wait"
    # one that can never hold decides at once, even while another is still running
    assert decide(when, states={"a": "running", "b": "success"}, final=False) == WhenResult(
        "skip", "step 'b' finished as success, not failure"
    )


def test_steps_all_and_any() -> None:
    when = {"steps": {"any": [{"name": "a"}, {"name": "b"}]}}
    assert decide(when, states={"a": "failure", "b": "success"}) == WhenResult("run", "step 'b' is success")
    assert decide(when, states={"a": "failure", "b": "running"}, final=False) == WhenResult(
        "wait",
        "none of when.steps.any holds yet: step 'a' finished as failure, not success; "
        "step 'b' is running, not yet success",
    )
    assert decide(when, states={"a": "failure", "b": "skipped"}, final=False) == WhenResult(
        "skip",
        "none of when.steps.any holds: step 'a' finished as failure, not success; "
        "step 'b' finished as skipped, not success",
    )
    both = {"steps": {"all": [{"name": "a"}], "any": [{"name": "b"}, {"name": "c"}]}}
    assert decide(both, states={"a": "success", "b": "failure", "c": "success"}).verdict == "run"
    assert decide(both, states={"a": "failure", "b": "success", "c": "success"}).verdict == "skip"
    assert decide({"steps": {"all": []}}, states={}).verdict == "run"


# --- condition expressions -----------------------------------------------------------------------------


def test_a_condition_is_substituted_then_evaluated_and_its_reason_quotes_it() -> None:
    when = {"condition": {"all": {"isMain": '"${{CF_BRANCH}}" == "main"'}}}
    assert decide(when) == WhenResult("skip", 'condition \'isMain\' is false: "dev" == "main"')
    assert decide(when, final=False) == WhenResult("wait", 'condition \'isMain\' is false: "dev" == "main"')
    assert decide({"condition": {"all": {"isDev": '"${{CF_BRANCH}}" == "dev"'}}}) == WhenResult(
        "run", "condition 'isDev' is true"
    )


def test_a_condition_that_cannot_be_evaluated_is_false_and_says_why() -> None:
    assert decide({"condition": {"all": {"x": "1 + foo"}}}) == WhenResult(
        "skip", "condition 'x' could not be evaluated: unknown identifier foo at column 5 → false"
    )
    assert decide({"condition": {"all": {"x": "${{NOPE}} == 1"}}}).reason == (
        "condition 'x' could not be evaluated: ${{NOPE}} is not a defined variable at column 1 → false"
    )


def test_all_conditions_must_hold_and_any_needs_one() -> None:
    all_of = {"condition": {"all": {"a": "true", "b": "${{COUNT}} > 5", "c": "true"}}}
    assert decide(all_of) == WhenResult("skip", "condition 'b' is false: 3 > 5")
    any_of = {"condition": {"any": {"a": "false", "b": "${{COUNT}} > 2"}}}
    assert decide(any_of) == WhenResult("run", "condition 'b' is true")
    none_of = {"condition": {"any": {"a": "false", "b": "oops"}}}
    assert decide(none_of) == WhenResult(
        "skip",
        "no condition in condition.any is true: condition 'a' is false: false; "
        "condition 'b' could not be evaluated: unknown identifier oops at column 1 → false",
    )
    both = {"condition": {"all": {"a": "true"}, "any": {"b": "false", "c": "true"}}}
    assert decide(both).verdict == "run"
    assert decide({"condition": {"all": {"a": "true"}, "any": {"b": "false"}}}).verdict == "skip"
    assert decide({"condition": {"all": {"a": "false"}, "any": {"b": "true"}}}).verdict == "skip"


def test_a_condition_may_read_step_results() -> None:
    when = {"condition": {"all": {"built": 'steps.build.result == "success"'}}}
    assert decide(when, states={"build": "success"}).verdict == "run"
    assert decide(when, states={"build": "running"}, final=False).verdict == "wait"


def test_a_condition_written_as_a_yaml_boolean_is_its_text() -> None:
    assert decide({"condition": {"all": {"always": True}}}).verdict == "run"
    assert decide({"condition": {"all": {"never": False}}}) == WhenResult("skip", "condition 'never' is false: false")


# --- the whole when ------------------------------------------------------------------------------------


def test_no_when_runs() -> None:
    assert decide(None) == WhenResult("run", "there is no when")
    assert decide({}) == WhenResult("run", "there is no when")
    assert decide({"branch": None, "steps": None}) == WhenResult("run", "nothing in when applies")


def test_a_refused_branch_skips_at_once_even_in_parallel_mode() -> None:
    when = {"branch": {"only": ["main"]}, "steps": [{"name": "a"}], "condition": {"all": {"x": "true"}}}
    assert decide(when, states={"a": "running"}, final=False) == WhenResult(
        "skip", "branch 'dev' is not in branch.only"
    )


def test_every_part_must_hold_to_run() -> None:
    when = {"branch": {"only": ["dev"]}, "steps": [{"name": "a"}], "condition": {"all": {"x": "true"}}}
    assert decide(when, states={"a": "success"}) == WhenResult(
        "run", "branch 'dev' is in branch.only; step 'a' is success; condition 'x' is true"
    )
    assert decide(when, states={"a": "running"}, final=False).reason == "step 'a' is running, not yet success"
    false_condition = {**when, "condition": {"all": {"x": "false"}}}
    assert decide(false_condition, states={"a": "success"}) == WhenResult("skip", "condition 'x' is false: false")


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"branches": {}}, "unknown part of when: branches"),
        ({"branch": ["main"]}, "when.branch must be a mapping with `only` and/or `ignore`"),
        ({"branch": {"only": ["/x/q"]}}, "'/x/q' has an unknown flag 'q' (use i, m, s, g, u or y)"),
        ({"steps": [{"name": "a", "on": ["done"]}]}, "when.steps: `on` of step 'a' must list states among"),
        ({"steps": [{"on": ["success"]}]}, "each entry of when.steps needs a step `name`"),
        ({"steps": {"some": []}}, "when.steps must be a list of {name, on}, or a mapping"),
        ({"condition": {"every": {}}}, "when.condition must be a mapping with `all` and/or `any`"),
        ({"condition": {"all": ["x"]}}, "when.condition.all must map names to expressions"),
    ],
)
def test_a_malformed_when_raises_condition_error(when: dict[str, Any], message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        decide(when, states={"a": "success"})
    assert str(caught.value).startswith(message)


WHEN_PARTS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(["success", "/x/i", "a"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["branch", "only", "ignore", "steps", "all", "any", "name", "on", "condition", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["branch", "condition", "steps"]), WHEN_PARTS, max_size=3),
    st.sampled_from([None, "", "main", "dev"]),
    st.dictionaries(
        st.sampled_from(["a", "x", "success"]), st.sampled_from(["pending", "running", "success", "error", "weird"])
    ),
    st.booleans(),
)
def test_any_when_gives_a_verdict_or_a_condition_error(
    when: dict[str, Any], branch: str | None, states: dict[str, str], final: bool
) -> None:
    try:
        result = decide(when, branch=branch, states=states, final=final)
    except ConditionError as caught:
        verdict, reason = "error", caught.message
    else:
        verdict, reason = result.verdict, result.reason
    assert verdict in (("run", "skip", "error") if final else ("run", "skip", "wait", "error"))
    assert reason


# --- validation: where `outpost validate` points -------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(dedent(text), "f.yml")
    return [str(p) for p in caught.value.problems]


def test_validation_points_at_a_bad_branch_regex() -> None:
    text = """\
        version: '1.0'
        steps:
          a:
            image: alpine
            when:
              branch:
                only: [main, '/^FB-/x']
                ignore:
                  - develop
                  - /(wip/
        """
    assert problems(text) == [
        "f.yml:7:22: step 'a': `when.branch.only[1]`: '/^FB-/x' has an unknown flag 'x' (use i, m, s, g, u or y)",
        "f.yml:10:13: step 'a': `when.branch.ignore[1]`: '/(wip/' is not a valid regular expression"
        " (missing ), unterminated subpattern at position 0)",
    ]


def test_validation_points_at_each_unknown_on_state_on_its_own_line() -> None:
    text = """\
        version: '1.0'
        steps:
          a:
            image: alpine
          b:
            image: alpine
            when:
              steps:
                - name: a
                  on:
                    - success
                    - done
                    - failed
        """
    assert problems(text) == [
        "f.yml:12:15: step 'b': unknown step state 'done' in `when.steps[0].on`",
        "f.yml:13:15: step 'b': unknown step state 'failed' in `when.steps[0].on`",
    ]


def test_validation_points_at_a_condition_name_that_is_not_a_word() -> None:
    text = """\
        version: '1.0'
        steps:
          a:
            image: alpine
            when:
              condition:
                any:
                  ok_1: 'true'
                  is main: 'true'
                  is-main: 'true'
        """
    assert problems(text) == [
        "f.yml:9:11: step 'a': condition name 'is main' may use only letters, digits and _",
        "f.yml:10:11: step 'a': condition name 'is-main' may use only letters, digits and _",
    ]


def test_a_valid_when_passes_validation_and_reaches_the_step() -> None:
    text = """\
        version: '1.0'
        steps:
          a:
            image: alpine
            when:
              branch: {only: [master, /^FB-/i], ignore: [develop]}
              condition:
                all: {isMain: '"${{CF_BRANCH}}" == "master"'}
              steps: {any: [{name: b, on: [finished, approved]}]}
          b:
            image: alpine
        """
    step = load_pipeline(dedent(text), "f.yml").steps[0]
    assert step.when is not None
    assert decide(step.when, branch="FB-1", states={"b": "success"}) == WhenResult(
        "skip", 'condition \'isMain\' is false: "dev" == "master"'
    )
    assert decide(step.when, branch="develop", states={"b": "success"}) == WhenResult(
        "skip", "branch 'develop' is in branch.ignore"
    )
