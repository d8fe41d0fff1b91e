"""Property-based: pipelines built from the format's own vocabulary, right and wrong, never make the parser,
the plan expansion or the `when` evaluation raise anything but our own errors."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outpost.engine.plan import expand, plan_of
from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline
from outpost.pipelines.when import evaluate_when

FIELDS = [
    "type", "image", "commands", "title", "stage", "fail_fast", "when", "retry", "timeout", "steps", "matrix",
    "scale", "hooks", "working_directory", "environment", "repo", "revision", "success_criteria", "arguments",
]  # fmt: skip
TYPES = ["freestyle", "parallel", "git-clone", "build", "push", "pending-approval", "deploy", "composition", "x/y:1"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.sampled_from(["45m", "1.5h", "0", "${{X}}", "/^main$/i", "success", "main", "", "a.b", "[x]"]),
    st.text(max_size=12),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from([*FIELDS, "only", "ignore", "name", "on", "all", "any", "condition"]), inner, max_size=4
        ),
    ),
    max_leaves=20,
)
step = st.fixed_dictionaries({"type": st.sampled_from(TYPES)}, optional={f: values for f in FIELDS if f != "type"})
pipelines = st.fixed_dictionaries(
    {
        "version": st.sampled_from(["1.0", 1, "2", None]),
        "steps": st.dictionaries(st.text(min_size=0, max_size=8), step, max_size=5),
    },
    optional={"mode": st.sampled_from(["parallel", "sequential", "x"]), "stages": values, "hooks": values},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines)
def test_any_pipeline_shape_parses_or_gives_located_problems(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document, sort_keys=False)
    try:
        pipeline = load_pipeline(text, "p.yml")
    except PipelineError as exc:
        problems = [str(p) for p in exc.problems]
        pipeline = None
    if pipeline is None:
        assert problems
        assert all(p.startswith("p.yml:") for p in problems)
        return
    expanded = expand(pipeline)
    names = [p.name for p in plan_of(expanded)]
    assert len(names) == len(set(names)), "every planned step has its own name"
    for s in expanded.all_steps():
        if s.when is not None:
            result = evaluate_when(
                s.when,
                branch="main",
                substitute=lambda t: t,
                lookup=lambda name: (_ for _ in ()).throw(KeyError(name)),
                step_state=lambda _name: "success",
                final=True,
            )
            assert result.verdict in ("run", "skip")


names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
conditions = st.sampled_from(
    [
        {"branch": {"only": ["main", "/^rel/i"]}},
        {"branch": {"ignore": ["/x/"]}},
        {"condition": {"all": {"a": "1 + 1 == 2"}, "any": {"b": "'${{X}}' == 'y'", "c": "true"}}},
        {"steps": [{"name": "first", "on": ["success", "failure"]}]},
        {"steps": {"any": [{"name": "nope", "on": ["finished"]}]}},
    ]
)
freestyle = st.fixed_dictionaries(
    {"image": st.just("alpine"), "commands": st.lists(st.sampled_from(["true", "echo ${{X}}"]), min_size=1)},
    optional={
        "when": conditions,
        "retry": st.fixed_dictionaries({"maxAttempts": st.integers(1, 10), "delay": st.integers(0, 60)}),
        "timeout": st.sampled_from(["1s", "45m", "1.5h", None]),
        "fail_fast": st.sampled_from([True, False, "${{FF}}"]),
        "matrix": st.fixed_dictionaries({"environment": st.lists(st.just(["A=1"]), min_size=1, max_size=3)}),
    },
)


def with_children(children: dict[str, Any]) -> dict[str, Any]:
    return {"type": "parallel", "steps": children}


valid_pipelines = st.builds(
    lambda first, rest, group: {
        "version": "1.0",
        "steps": {"first": first, **rest, **({"group": with_children(group)} if group else {})},
    },
    freestyle,
    st.dictionaries(names.filter(lambda n: n not in ("first", "group")), freestyle, max_size=3),
    st.dictionaries(
        names.map(lambda n: "g_" + n),
        freestyle.map(lambda s: {k: v for k, v in s.items() if k != "matrix"}),
        max_size=3,
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_pipelines)
def test_well_formed_pipelines_parse_and_expand_into_a_plan(document: dict[str, Any]) -> None:
    pipeline = load_pipeline(yaml.safe_dump(document, sort_keys=False), "p.yml")
    plan = plan_of(expand(pipeline))
    names_ = [p.name for p in plan]
    assert len(names_) == len(set(names_))
    matrix_steps = [name for name, s in document["steps"].items() if "matrix" in s]
    for name in matrix_steps:
        variants = len(document["steps"][name]["matrix"]["environment"])
        children = [p.name for p in plan if p.parent == name]
        assert len(children) == variants
        assert all(c.startswith(f"{name}_") for c in children)
