"""A freestyle step's `artifacts` and `junit` (Outpost's own fields): globs kept inside the build volume."""

from __future__ import annotations

import pytest

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline

HEAD = "version: '1.0'\nsteps:\n  test:\n    image: alpine\n    commands: [make test]\n"


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(text)
    return [str(p) for p in caught.value.problems]


def test_artifacts_and_junit_paths_are_read_without_a_warning() -> None:
    pipeline = load_pipeline(
        HEAD + "    artifacts: [dist/*.tar.gz, /codefresh/volume/report.html]\n    junit: ['reports/**/*.xml']\n"
    )
    step = pipeline.steps[0]
    assert step.fields["artifacts"] == ["dist/*.tar.gz", "/codefresh/volume/report.html"]
    assert step.fields["junit"] == ["reports/**/*.xml"]
    assert pipeline.warnings == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            "    artifacts: ../secrets\n",
            "codefresh.yml:6:16: step 'test': `artifacts` must be a list, not '../secrets'",
        ),
        (
            "    artifacts: [dist/a, ../../etc/passwd]\n",
            "codefresh.yml:6:25: step 'test': `artifacts[1]` may not climb out with '..': '../../etc/passwd'",
        ),
        (
            "    junit:\n      - /etc/*.xml\n",
            "codefresh.yml:7:9: step 'test': `junit[0]` must be relative to the step's working directory or under"
            " /codefresh/volume, not '/etc/*.xml'",
        ),
        (
            "    junit: ['/codefresh/volume/../x.xml']\n",
            "codefresh.yml:6:13: step 'test': `junit[0]` may not climb out with '..': '/codefresh/volume/../x.xml'",
        ),
        (
            "    junit: ['']\n",
            "codefresh.yml:6:13: step 'test': `junit[0]` is empty",
        ),
    ],
)
def test_a_path_that_could_leave_the_volume_is_refused_at_its_line_and_column(fields: str, expected: str) -> None:
    assert problems(HEAD + fields) == [expected]


def test_a_misspelt_artifacts_field_is_a_warning_that_names_it() -> None:
    pipeline = load_pipeline(HEAD + "    artifact: [dist/a]\n")
    assert [w.message for w in pipeline.warnings] == [
        "step 'test': unknown field 'artifact' — did you mean 'artifacts'? (a freestyle step tolerates it, and"
        " ignores it)"
    ]
