"""Planning a build's pipeline: parsed once per text, and each build still gets a pipeline of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.engine import BuildOutcome
from outpost.engine.plan import _Plans, planned
from outpost.errors import PipelineError
from tests.engine.test_engine import run, steps

SHOW = steps(
    '  show:\n    image: alpine\n    commands:\n      - echo "X=${{X}}"\n'
    "  many:\n    image: alpine\n    matrix:\n      environment: [[N=1], [N=2]]\n"
    '    commands:\n      - echo "N=$N X=${{X}}"\n'
)
TYPO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    comands:\n      - echo hi\n"


async def test_the_same_pipeline_built_twice_shows_each_build_its_own_values(tmp_path: Path) -> None:
    first, one = await run(tmp_path / "one", SHOW, X="first")
    second, two = await run(tmp_path / "two", SHOW, X="second")
    assert first == second == BuildOutcome("success")
    assert one.text("show") == "X=first\n"
    assert two.text("show") == "X=second\n"
    assert two.text("many_1") + two.text("many_2") == "N=1 X=second\nN=2 X=second\n"
    assert [p.name for p in one.plans[0].steps] == [p.name for p in two.plans[0].steps]


def test_what_a_build_does_to_its_pipeline_does_not_reach_the_next() -> None:
    mine = planned(SHOW)
    mine.steps[0].fields["commands"].append("rm -rf /")
    mine.steps[1].steps.clear()
    again = planned(SHOW)
    assert again.steps[0].commands == ['echo "X=${{X}}"']
    assert [s.name for s in again.steps[1].steps] == ["many_1", "many_2"]


def test_an_edited_pipeline_runs_as_edited() -> None:
    assert [s.name for s in planned(steps("  a:\n    image: x\n    commands: [true]\n")).steps] == ["a"]
    assert [s.name for s in planned(steps("  b:\n    image: x\n    commands: [true]\n")).steps] == ["b"]


def test_warnings_name_the_file_each_build_read() -> None:
    assert [w.file for w in planned(TYPO, "a.yml").warnings] == ["a.yml"]
    assert [w.file for w in planned(TYPO, "b.yml").warnings] == ["b.yml"]


def test_an_invalid_pipeline_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(PipelineError, match="steps"):
            planned("version: '1.0'\n")


def test_the_parsed_pipelines_kept_are_bounded_in_number_and_size() -> None:
    plans = _Plans(kept=2, chars=4096)
    texts = [steps(f"  s{i}:\n    image: x\n    commands: [true]\n") for i in range(4)]
    for text in texts:
        plans.get(text, "codefresh.yml")
    assert len(plans._plans) == 2
    assert [key[0] for key in plans._plans] == texts[2:]
    big = steps("".join(f"  s{i}:\n    image: x\n    commands: [true]\n" for i in range(40)))
    assert len(big) > 4096 // 4
    assert [s.name for s in plans.get(big, "codefresh.yml").steps][-1] == "s39"
    assert all(key[0] != big for key in plans._plans)  # parsed, not kept
