"""Likely typos are tolerated, as the original does, but each is a located warning with the name it probably
meant; and a parallel step's `steps` may be written as a list of steps named by their titles."""

from __future__ import annotations

import pytest

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline

TYPO = """version: '1.0'
steps:
  test:
    image: alpine
    comands:
      - echo hi
"""
NEAR_TYPE = """version: '1.0'
steps:
  ship:
    type: freestlye
    image: alpine
"""
LISTED = """version: '1.0'
steps:
  checks:
    type: parallel
    steps:
      - title: Unit tests
        image: alpine
        commands: [echo unit]
      - title: Lint (fast)
        image: alpine
        commands: [echo lint]
      - image: alpine
        commands: [echo untitled]
      - title: Unit tests
        image: alpine
        commands: [echo again]
  after:
    image: alpine
    commands: [echo done]
    when:
      steps:
        - name: unit_tests
          on: [success]
"""


def test_a_misspelt_freestyle_field_is_a_warning_that_names_the_field_it_probably_meant() -> None:
    pipeline = load_pipeline(TYPO)
    assert [(w.line, w.column) for w in pipeline.warnings] == [(5, 5)]
    message = pipeline.warnings[0].message
    assert "unknown field 'comands' — did you mean 'commands'?" in message
    assert pipeline.steps[0].commands == []  # ignored, as the original ignores it


def test_a_step_type_one_letter_off_a_built_in_is_a_warning_with_the_built_in() -> None:
    (warning,) = load_pipeline(NEAR_TYPE).warnings
    assert (warning.line, warning.column) == (4, 11)
    assert "unknown step type 'freestlye' — did you mean 'freestyle'?" in warning.message


@pytest.mark.parametrize("kind", ["acme/freestlye", "freestlye:1.0", "my-deploy-tool"])
def test_catalogue_step_types_that_are_not_near_misses_get_no_warning(kind: str) -> None:
    assert load_pipeline(NEAR_TYPE.replace("freestlye", kind)).warnings == []


def test_a_clean_file_has_no_warnings() -> None:
    assert load_pipeline(TYPO.replace("comands", "commands")).warnings == []


def test_a_parallel_step_written_as_a_list_gets_names_from_its_titles() -> None:
    pipeline = load_pipeline(LISTED)
    checks = pipeline.steps[0]
    assert [(s.name, s.title) for s in checks.steps] == [
        ("unit_tests", "Unit tests"),
        ("lint_fast", "Lint (fast)"),
        ("checks_3", None),
        ("unit_tests_2", "Unit tests"),
    ]
    assert [s.commands for s in checks.steps][2] == ["echo untitled"]
    assert checks.steps[1].location.line == 9


def test_a_listed_parallel_step_is_checked_like_any_other() -> None:
    no_image = LISTED.replace("        image: alpine\n        commands: [echo lint]\n", "        commands: [x]\n")
    with pytest.raises(PipelineError) as caught:
        load_pipeline(no_image)
    assert any("`image` is required" in p.message and p.line == 9 for p in caught.value.problems)


def test_a_list_of_top_level_steps_is_still_refused_with_the_reason() -> None:
    with pytest.raises(PipelineError) as caught:
        load_pipeline("version: '1.0'\nsteps:\n  - title: a\n    image: alpine\n")
    assert "`steps` must be a mapping" in str(caught.value)
