"""Valid pipelines: what `load_pipeline` builds from them."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from outpost.pipelines.parsing import load_pipeline, summary
from outpost.pipelines.spec import Location, Pipeline, Step

DATA = Path(__file__).parent / "data"


def load(text: str) -> Pipeline:
    return load_pipeline(dedent(text))


def by_name(pipeline: Pipeline) -> dict[str, Step]:
    return {step.name: step for step in pipeline.all_steps()}


@pytest.fixture
def full() -> Pipeline:
    return load_pipeline((DATA / "full.yml").read_text(), "full.yml")


def test_the_top_level_fields_are_read(full: Pipeline) -> None:
    assert full.version == "1.0"
    assert full.mode == "sequential"
    assert full.stages == ["prepare", "test", "ship"]
    assert full.fail_fast is False
    assert full.file == "full.yml"
    assert full.hooks["on_finish"]["exec"]["image"] == "alpine:3.20"


def test_steps_keep_file_order_and_parallel_children_nest(full: Pipeline) -> None:
    assert [s.name for s in full.steps] == ["main_clone", "unit", "checks", "image", "publish", "approve", "notify"]
    checks = by_name(full)["checks"]
    assert [s.name for s in checks.steps] == ["lint", "audit"]
    assert summary(full) == "9 steps (7 top-level), 3 stages, mode sequential"


def test_common_fields_are_lifted_into_attributes(full: Pipeline) -> None:
    unit = by_name(full)["unit"]
    assert (unit.type, unit.title, unit.stage, unit.fail_fast, unit.timeout) == (
        "freestyle",
        "Unit tests",
        "test",
        True,
        5400.0,
    )
    assert unit.when is not None
    assert unit.when["steps"] == [{"name": "main_clone", "on": ["success"]}]
    assert unit.location == Location(23, 3)


def test_a_step_without_fail_fast_takes_the_pipelines(full: Pipeline) -> None:
    assert by_name(full)["main_clone"].fail_fast is False


def test_freestyle_fields_are_plain_values_with_merges_resolved(full: Pipeline) -> None:
    unit = by_name(full)["unit"]
    assert unit.image == "node:20"
    assert unit.shell == "bash"
    assert unit.commands == ["npm ci", "npm test -- --ci", "42"]
    assert unit.environment == ["NODE_ENV=test", "EMPTY="]
    assert unit.fields["retry"] == {"maxAttempts": 3, "delay": 10}


def test_a_parallel_steps_timeout_reaches_its_children_unless_they_disable_it(full: Pipeline) -> None:
    steps = by_name(full)
    assert steps["checks"].timeout == 1200.0
    assert steps["lint"].timeout == 1200.0
    assert steps["audit"].timeout is None


def test_arguments_are_merged_into_the_fields_of_a_built_in_step(full: Pipeline) -> None:
    clone = by_name(full)["main_clone"]
    assert clone.fields == {
        "type": "git-clone",
        "stage": "prepare",
        "repo": "acme/shop",
        "revision": "${{CF_REVISION}}",
    }


def test_a_typed_step_keeps_its_arguments_as_well(full: Pipeline) -> None:
    notify = by_name(full)["notify"]
    assert notify.type == "acme/slack-notify:1.2.0"
    assert notify.fields["channel"] == "#builds"
    assert notify.fields["arguments"] == {"channel": "#builds", "text": "done"}


def test_a_typed_steps_timeout_argument_is_not_the_step_timeout() -> None:
    pipeline = load(
        """\
        version: '1.0'
        steps:
          deploy:
            type: helm:1.1.12
            timeout: 10m
            arguments:
              action: install
              timeout: 300
        """
    )
    deploy = pipeline.steps[0]
    assert deploy.timeout == 600.0
    assert deploy.fields["timeout"] == "10m"
    assert deploy.fields["arguments"]["timeout"] == 300


def test_legacy_hyphenated_names_are_stored_under_the_current_name(full: Pipeline) -> None:
    image = by_name(full)["image"]
    assert image.fields["image_name"] == "acme/shop"
    assert "image-name" not in image.fields


def test_a_number_where_a_string_belongs_keeps_its_text(full: Pipeline) -> None:
    assert by_name(full)["image"].fields["tag"] == "1.10"


def test_type_specific_timeouts_are_not_step_timeouts(full: Pipeline) -> None:
    approve = by_name(full)["approve"]
    assert approve.timeout is None
    assert approve.fields["timeout"] == {"duration": 2, "timeUnit": "hours", "finalState": "denied"}


def test_merge_keys_take_own_keys_first_then_earlier_merges() -> None:
    steps = by_name(load_pipeline((DATA / "anchors.yml").read_text()))
    assert steps["test"].image == "node:20"  # *node comes before *bash in the merge list
    assert steps["test"].shell == "bash"
    assert steps["lint"].image == "node:18"
    assert steps["lint"].environment == ["CI=true"]
    assert steps["docs"].environment == ["CI=true"]


def test_aliased_values_are_independent_copies() -> None:
    steps = by_name(load_pipeline((DATA / "anchors.yml").read_text()))
    steps["lint"].fields["environment"].append("X=1")
    assert steps["docs"].environment == ["CI=true"]


def test_an_anchor_may_be_redefined_and_aliases_take_the_latest() -> None:
    pipeline = load(
        """\
        version: '1.0'
        indicators:
          - &img alpine
          - &img busybox
        steps:
          a:
            image: *img
        """
    )
    assert pipeline.steps[0].image == "busybox"


def test_unquoted_version_one_point_zero_is_accepted() -> None:
    assert load("version: 1.0\nsteps:\n  a:\n    image: alpine\n").version == "1.0"


def test_scalars_follow_yaml_1_2_so_on_and_yes_stay_strings() -> None:
    pipeline = load(
        """\
        version: '1.0'
        mode: parallel
        steps:
          a:
            image: alpine
            answer: yes
            when:
              steps:
                - name: b
                  on: [finished]
          b:
            image: alpine
            started: 2024-01-02
            tag: 1:30
        """
    )
    a, b = pipeline.steps
    assert a.fields["answer"] == "yes"
    assert a.when == {"steps": [{"name": "b", "on": ["finished"]}]}
    assert (b.fields["started"], b.fields["tag"]) == ("2024-01-02", "1:30")


def test_unknown_fields_are_tolerated_on_freestyle_and_typed_steps() -> None:
    pipeline = load(
        """\
        version: '1.0'
        steps:
          tests:
            image: alpine
            create_file: {path: /tmp, name: x, content: y}
          notify:
            type: slack-notifier:0.0.8
            anything: goes
        """
    )
    assert [s.fields.get("create_file", s.fields.get("anything")) for s in pipeline.steps] == [
        {"path": "/tmp", "name": "x", "content": "y"},
        "goes",
    ]


def test_boolean_fields_accept_a_variable_reference() -> None:
    pipeline = load(
        """\
        version: '1.0'
        fail_fast: ${{STOP_ON_ERROR}}
        steps:
          a:
            image: alpine
            fail_fast: ${{ A_MAY_FAIL }}
          b:
            image: alpine
        """
    )
    assert pipeline.fail_fast == "${{STOP_ON_ERROR}}"
    assert [s.fail_fast for s in pipeline.steps] == ["${{ A_MAY_FAIL }}", "${{STOP_ON_ERROR}}"]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("45m", 2700.0), ("30s", 30.0), ("1.5h", 5400.0), (".5m", 30.0), ("0", None), ("", None), ("0s", None)],
)
def test_timeouts_become_seconds(written: str, seconds: float | None) -> None:
    pipeline = load(f"version: '1.0'\nsteps:\n  a:\n    image: alpine\n    timeout: {written}\n")
    assert pipeline.steps[0].timeout == seconds


def test_scale_and_matrix_can_supply_the_required_fields() -> None:
    pipeline = load(
        """\
        version: '1.0'
        steps:
          tests:
            commands: [make test]
            scale:
              py311:
                image: python:3.11
              py312:
                image: python:3.12
          builds:
            type: build
            scale:
              api:
                image_name: acme/api
          matrix_tests:
            commands: [go test]
            matrix:
              image: [golang:1.21, golang:1.22]
        """
    )
    assert [s.name for s in pipeline.steps] == ["tests", "builds", "matrix_tests"]


def test_bytes_are_read_as_utf8_with_or_without_a_bom() -> None:
    text = "version: '1.0'\nsteps:\n  a:\n    title: Café ☕\n    image: alpine\n"
    for data in (text.encode(), b"\xef\xbb\xbf" + text.encode()):
        assert load_pipeline(data).steps[0].title == "Café ☕"


def test_the_summary_counts_in_the_singular_too() -> None:
    assert summary(load("version: '1.0'\nsteps:\n  a:\n    image: alpine\n")) == (
        "1 step (1 top-level), 0 stages, mode sequential"
    )
