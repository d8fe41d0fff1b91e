"""Invalid pipelines: every problem is reported, each at the line and column of what is wrong."""

from __future__ import annotations

from textwrap import dedent

import pytest

from outpost.errors import PipelineError
from outpost.pipelines.parsing import load_pipeline


def problems(text: str | bytes) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_pipeline(dedent(text) if isinstance(text, str) else text)
    return [str(p) for p in caught.value.problems]


HEAD = "version: '1.0'\nsteps:\n"  # the steps of every case below start on line 3

CASES: list[tuple[str, str | bytes, list[str]]] = [
    (
        "an empty file",
        "",
        ["codefresh.yml:1:1: the file is empty; a pipeline needs at least `version` and `steps`"],
    ),
    (
        "a file of comments only",
        "# nothing yet\n",
        ["codefresh.yml:1:1: the file is empty; a pipeline needs at least `version` and `steps`"],
    ),
    (
        "a list at the top",
        "- version: '1.0'\n",
        ["codefresh.yml:1:1: the file must be a mapping with `version` and `steps`, not a list"],
    ),
    (
        "a YAML syntax error",
        HEAD + "  a:\n    image: alpine\n   commands: [ls]\n",
        [
            "codefresh.yml:5:4: invalid YAML: expected <block end>, but found '<block mapping start>'"
            " (while parsing a block mapping on line 3)"
        ],
    ),
    (
        "an unclosed quote",
        HEAD + "  a:\n    image: 'alpine\n",
        ["codefresh.yml:5:1: invalid YAML: found unexpected end of stream (while scanning a quoted scalar on line 4)"],
    ),
    (
        "an alias with no anchor",
        HEAD + "  a:\n    image: *img\n",
        ["codefresh.yml:4:12: invalid YAML: found undefined alias 'img'"],
    ),
    (
        "two documents in one file",
        "version: '1.0'\n---\nsteps: {}\n",
        ["codefresh.yml:2:1: invalid YAML: expected a single document in the stream, but found another document"],
    ),
    (
        "a tab used for indentation",
        HEAD + "  a:\n\timage: alpine\n",
        [
            "codefresh.yml:4:1: invalid YAML: found character '\\t' that cannot start any token"
            " (indent with spaces, not tabs)"
        ],
    ),
    (
        "bytes that are not UTF-8",
        b"version: '1.0'\nsteps:\n  a:\n    image: caf\xe9\n",
        ["codefresh.yml:4:15: the file is not valid UTF-8 (byte 0xe9)"],
    ),
    (
        "a control character",
        HEAD + "  a:\n    image: al\x07pine\n",
        ["codefresh.yml:4:14: the file holds a character YAML does not allow (U+0007)"],
    ),
    (
        "a duplicate key",
        HEAD + "  a:\n    image: alpine\n    image: busybox\n",
        ["codefresh.yml:5:5: duplicate key 'image' (first on line 4)"],
    ),
    (
        "a list as a key",
        HEAD + "  a:\n    image: alpine\n    ? [x]\n    : y\n",
        ["codefresh.yml:5:7: a key must be a plain value, not a list or a mapping"],
    ),
    (
        "a tag we do not read",
        HEAD + "  a:\n    image: !Ref ImageName\n",
        ["codefresh.yml:4:12: unsupported YAML tag !Ref"],
    ),
    (
        "a merge of something that is not a mapping",
        HEAD + "  a:\n    <<: alpine\n    image: alpine\n",
        ["codefresh.yml:4:9: `<<` must merge a mapping or a list of mappings"],
    ),
    (
        "no version and no steps",
        "mode: sequential\n",
        [
            "codefresh.yml:1:1: `version` is required (version: '1.0')",
            "codefresh.yml:1:1: `steps` is required",
        ],
    ),
    (
        "another version",
        "version: '2.0'\nsteps:\n  a:\n    image: alpine\n",
        ["codefresh.yml:1:10: `version` must be '1.0', not '2.0'"],
    ),
    (
        "an unknown top-level field",
        "version: '1.0'\nstep:\n  a:\n    image: alpine\n",
        [
            "codefresh.yml:1:1: `steps` is required",
            "codefresh.yml:2:1: unknown field `step` at the top level (did you mean `steps`?)",
        ],
    ),
    (
        "an unknown mode",
        "version: '1.0'\nmode: fast\nsteps:\n  a:\n    image: alpine\n",
        ["codefresh.yml:2:7: `mode` must be sequential or parallel, not 'fast'"],
    ),
    (
        "no steps in steps",
        "version: '1.0'\nsteps: {}\n",
        ["codefresh.yml:2:8: `steps` needs at least one step"],
    ),
    (
        "a step that is not a mapping",
        HEAD + "  a: alpine\n",
        ["codefresh.yml:3:6: step 'a' must be a mapping of fields, not 'alpine'"],
    ),
    (
        "a step name with a slash",
        HEAD + "  build/api:\n    image: alpine\n",
        ["codefresh.yml:3:3: step name 'build/api' contains / (names cannot contain . # $ [ ] /)"],
    ),
    (
        "a step name over 150 characters",
        HEAD + f"  {'s' * 151}:\n    image: alpine\n",
        [f"codefresh.yml:3:3: step name '{'s' * 39}…' is longer than 150 characters"],
    ),
    (
        "a freestyle step without an image",
        HEAD + "  a:\n    commands: [ls]\n",
        ["codefresh.yml:3:3: step 'a': `image` is required for a freestyle step"],
    ),
    (
        "a command that YAML read as a mapping",
        HEAD + "  a:\n    image: alpine\n    commands:\n      - echo note: this\n      -\n",
        [
            "codefresh.yml:6:9: step 'a': `commands[0]` must be a plain value, not a mapping"
            " (quote an entry that contains ': ')",
            "codefresh.yml:7:8: step 'a': `commands[1]` is empty",
        ],
    ),
    (
        "cmd together with commands",
        HEAD + "  a:\n    image: alpine\n    cmd: [ls]\n    commands: [ls]\n",
        ["codefresh.yml:5:5: step 'a': `cmd` cannot be used together with `commands`"],
    ),
    (
        "environment as a mapping",
        HEAD + "  a:\n    image: alpine\n    environment:\n      A: 1\n",
        [
            "codefresh.yml:6:7: step 'a': `environment` must be a list, not a mapping;"
            " write it as a list of KEY=VALUE strings: `- KEY=VALUE`"
        ],
    ),
    (
        "an environment entry without a value",
        HEAD + "  a:\n    image: alpine\n    environment: [A=1, B, =2]\n",
        [
            "codefresh.yml:5:24: step 'a': `environment[1]` must be KEY=VALUE, not 'B'",
            "codefresh.yml:5:27: step 'a': `environment[2]` must be KEY=VALUE, not '=2'",
        ],
    ),
    (
        "an unknown shell",
        HEAD + "  a:\n    image: alpine\n    shell: zsh\n",
        ["codefresh.yml:5:12: step 'a': `shell` must be sh or bash, not 'zsh'"],
    ),
    (
        "a timeout without a unit",
        HEAD + "  a:\n    image: alpine\n    timeout: 10\n",
        [
            "codefresh.yml:5:14: step 'a': `timeout` must be a duration such as 45m, 30s or 1.5h"
            " (0 or empty for none), not the number 10"
        ],
    ),
    (
        "retry out of range and misspelt",
        HEAD + "  a:\n    image: alpine\n    retry:\n      maxAttempts: 11\n      delai: 5\n",
        [
            "codefresh.yml:6:20: step 'a': `retry.maxAttempts` must be a whole number from 1 to 10, not the number 11",
            "codefresh.yml:7:7: step 'a': unknown field `retry.delai` (did you mean `retry.delay`?)",
        ],
    ),
    (
        "a stage that is not declared",
        "version: '1.0'\nstages: [build]\nsteps:\n  a:\n    image: alpine\n    stage: tests\n",
        ["codefresh.yml:6:12: step 'a': stage 'tests' is not one of the pipeline's stages (build)"],
    ),
    (
        "fail_fast that is not a boolean",
        HEAD + "  a:\n    image: alpine\n    fail_fast: 'no'\n",
        ["codefresh.yml:5:16: step 'a': `fail_fast` must be true, false or a ${{VARIABLE}}, not 'no'"],
    ),
    (
        "both spellings of fail_fast",
        HEAD + "  a:\n    image: alpine\n    fail-fast: false\n    fail_fast: false\n",
        ["codefresh.yml:5:5: step 'a': `fail-fast` and `fail_fast` are the same field; keep only `fail_fast`"],
    ),
    (
        "a when with unknown parts",
        HEAD + "  a:\n    image: alpine\n    when:\n      branches: {only: [main]}\n"
        "      steps:\n        - name: b\n          on: [done]\n",
        [
            "codefresh.yml:6:7: step 'a': unknown field `when.branches` (did you mean `when.branch`?)",
            "codefresh.yml:9:16: step 'a': unknown step state 'done' in `when.steps[0].on`",
        ],
    ),
    (
        "a condition name with a dash",
        HEAD + "  a:\n    image: alpine\n    when:\n      condition:\n        all:\n          is-main: 'true'\n",
        ["codefresh.yml:8:11: step 'a': condition name 'is-main' may use only letters, digits and _"],
    ),
    (
        "an unknown step type",
        HEAD + "  a:\n    type: free style\n",
        [
            "codefresh.yml:4:11: step 'a': unknown step type 'free style'"
            " (use a built-in type or `[account/]name[:version]`)"
        ],
    ),
    (
        "a git-clone step without repo and with a field the spec does not have",
        HEAD + "  clone:\n    type: git-clone\n    submodules: true\n",
        [
            "codefresh.yml:3:3: step 'clone': `repo` is required for a git-clone step",
            "codefresh.yml:5:5: step 'clone': unknown field `submodules` for a git-clone step",
        ],
    ),
    (
        "a build step without image_name, with platform but no buildx",
        HEAD + "  image:\n    type: build\n    platform: linux/arm64\n",
        [
            "codefresh.yml:3:3: step 'image': `image_name` is required for a build step",
            "codefresh.yml:5:5: step 'image': `platform` needs `buildx`",
        ],
    ),
    (
        "a push step without a candidate",
        HEAD + "  push:\n    type: push\n    tag: latest\n",
        ["codefresh.yml:3:3: step 'push': `candidate` is required for a push step"],
    ),
    (
        "a composition without candidates",
        HEAD + "  it:\n    type: composition\n    composition: docker-compose.yml\n",
        ["codefresh.yml:3:3: step 'it': `composition_candidates` is required for a composition step"],
    ),
    (
        "a deploy step with neither service nor file_path",
        HEAD + "  ship:\n    type: deploy\n    kind: kubernetes\n    cluster: prod\n    namespace: shop\n",
        ["codefresh.yml:3:3: step 'ship': `service` or `file_path` is required for a deploy step"],
    ),
    (
        "an approval timeout in days",
        HEAD + "  ok:\n    type: pending-approval\n    timeout:\n      duration: 2\n      timeUnit: days\n",
        ["codefresh.yml:7:17: step 'ok': `timeout.timeUnit` must be hours or minutes, not 'days'"],
    ),
    (
        "a parallel step with no steps",
        HEAD + "  p:\n    type: parallel\n",
        ["codefresh.yml:3:3: step 'p': `steps` is required"],
    ),
    (
        "an approval inside a parallel step",
        HEAD + "  p:\n    type: parallel\n    steps:\n      ok:\n        type: pending-approval\n",
        ["codefresh.yml:7:15: step 'ok': a parallel step cannot contain a pending-approval step"],
    ),
    (
        "hooks on a parallel step and an unknown hook",
        HEAD + "  p:\n    type: parallel\n    hooks:\n      on_start: {exec: [ls]}\n"
        "    steps:\n      a:\n        image: alpine\n",
        [
            "codefresh.yml:5:5: step 'p': a parallel step cannot have hooks (give them to its steps)",
            "codefresh.yml:6:7: step 'p': unknown field `hooks.on_start`"
            " (hooks are on_elected, on_finish, on_success, on_fail)",
        ],
    ),
    (
        "scale in parallel mode",
        "version: '1.0'\nmode: parallel\nsteps:\n  t:\n    image: alpine\n    scale:\n      one: {}\n",
        ["codefresh.yml:6:5: step 't': `scale` cannot be used with `mode: parallel`"],
    ),
    (
        "scale children that leave the image out",
        HEAD + "  t:\n    commands: [ls]\n    scale:\n      one:\n        title: One\n",
        ["codefresh.yml:6:7: step 't' (scale 'one'): `image` is required for a freestyle step"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_invalid_file_gives_exactly_these_problems(text: str | bytes, expected: list[str]) -> None:
    assert problems(text) == expected


def test_every_problem_is_reported_with_its_line_and_column() -> None:
    text = """\
        version: '1.0'
        stages: [build]
        colour: blue
        steps:
          a:
            image: [alpine]
            stage: test
          b:
            type: git-clone
          c:
            image: alpine
            retry: {maxAttempts: 0}
        """
    assert problems(text) == [
        "codefresh.yml:3:1: unknown field `colour` at the top level",
        "codefresh.yml:6:12: step 'a': `image` must be a string, not a list",
        "codefresh.yml:7:12: step 'a': stage 'test' is not one of the pipeline's stages (build)",
        "codefresh.yml:8:3: step 'b': `repo` is required for a git-clone step",
        "codefresh.yml:12:26: step 'c': `retry.maxAttempts` must be a whole number from 1 to 10, not the number 0",
    ]


def test_step_names_are_unique_across_parallel_nesting_and_scale() -> None:
    text = """\
        version: '1.0'
        steps:
          test:
            image: alpine
          group:
            type: parallel
            steps:
              inner:
                type: parallel
                steps:
                  test:
                    image: alpine
              group:
                image: alpine
          fan:
            image: alpine
            scale:
              inner: {}
        """
    assert problems(text) == [
        "codefresh.yml:11:11: step name 'test' is already used on line 3",
        "codefresh.yml:13:7: step name 'group' is already used on line 5",
        "codefresh.yml:18:7: step name 'inner' is already used on line 8",
    ]


def test_a_problem_in_a_merged_anchor_points_where_the_value_is_written() -> None:
    text = """\
        version: '1.0'
        indicators:
          - &defaults
            image: alpine
            shell: zsh
        steps:
          a:
            <<: *defaults
          b:
            <<: *defaults
        """
    assert problems(text) == [
        "codefresh.yml:5:12: step 'a': `shell` must be sh or bash, not 'zsh'",
        "codefresh.yml:5:12: step 'b': `shell` must be sh or bash, not 'zsh'",
    ]


def test_the_file_name_given_is_the_one_reported() -> None:
    with pytest.raises(PipelineError) as caught:
        load_pipeline("version: '1.0'\n", ".codefresh/build.yml")
    assert str(caught.value) == ".codefresh/build.yml:1:1: `steps` is required"


def test_an_alias_loop_is_a_problem_not_a_hang() -> None:
    assert problems(HEAD + "  a: &a\n    image: alpine\n    again: *a\n") == [
        "codefresh.yml:3:6: an alias refers to a node that contains it"
    ]


def test_a_merge_loop_is_a_problem_not_a_hang() -> None:
    assert problems(HEAD + "  a: &a\n    image: alpine\n    <<: *a\n") == [
        "codefresh.yml:3:6: a `<<` merge includes the mapping it is in"
    ]


def test_a_billion_laughs_file_is_refused() -> None:
    lines = ["version: '1.0'", "indicators:", "  - &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["steps:", "  a:", "    image: alpine"]
    assert problems("\n".join(lines)) == [
        "codefresh.yml:1:1: the file expands to more than 100000 values through its aliases"
    ]


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    assert problems(HEAD + "  a: " + "[" * 2000 + "]" * 2000 + "\n") == [
        "codefresh.yml:1:1: the YAML is nested too deeply"
    ]
