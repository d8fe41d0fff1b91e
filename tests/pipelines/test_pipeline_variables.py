"""Variables: `${{NAME}}` substitution, the cf_export file, branch tags, the branch and revision variables and the
system variables."""

from __future__ import annotations

import pytest

from outpost.pipelines.variables import (
    EXPORT_FILE,
    build_system_variables,
    is_variable_ref,
    normalize_branch_tag,
    parse_export_file,
    revision_variables,
    substitute,
    substitute_all,
)

VARIABLES = {"CF_BRANCH": "main", "TAG": "1.2", "EMPTY": "", "steps.test.result": "success", "LOOP": "${{TAG}}"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${{CF_BRANCH}}", "main"),
        ("app:${{TAG}}-${{CF_BRANCH}}", "app:1.2-main"),
        ("${{ CF_BRANCH }}", "main"),
        ("${{TAG}}${{TAG}}", "1.21.2"),
        ("[${{EMPTY}}]", "[]"),
        ("${{steps.test.result}}", "success"),
        ("${{MISSING}}", "${{MISSING}}"),
        ("${{ MISSING }} and ${{TAG}}", "${{ MISSING }} and 1.2"),
        ("${{LOOP}}", "${{TAG}}"),
        ("${TAG} $TAG {{TAG}} ${{}}", "${TAG} $TAG {{TAG}} ${{}}"),
        ("", ""),
    ],
)
def test_substitution_replaces_defined_variables_and_keeps_the_rest(text: str, expected: str) -> None:
    assert substitute(text, VARIABLES) == expected


def test_substitution_reaches_into_lists_and_mappings_keys_included() -> None:
    value = {"image": "node:${{TAG}}", "${{CF_BRANCH}}": ["${{TAG}}", 3, None, {"on": True}]}
    assert substitute_all(value, VARIABLES) == {"image": "node:1.2", "main": ["1.2", 3, None, {"on": True}]}


def test_substitution_leaves_the_original_value_untouched() -> None:
    value = ["${{TAG}}"]
    substitute_all(value, VARIABLES)
    assert value == ["${{TAG}}"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${{VAR}}", True),
        ("${{ VAR }}", True),
        ("${{steps.a.result}}", True),
        ("${{VAR}} ", False),
        ("x${{VAR}}", False),
        ("${{A}}${{B}}", False),
        ("${{}}", False),
        ("${{ }}", False),
        ("true", False),
        (True, False),
        (None, False),
    ],
)
def test_a_variable_reference_is_one_whole_reference(value: object, expected: bool) -> None:
    assert is_variable_ref(value) is expected


def test_the_export_file_is_key_value_lines_where_later_lines_win() -> None:
    text = "A=1\n\nB=x=y\nnot a line\n=nokey\nA=2\r\nC=\n 1D=3\nexport E=4\nF=with spaces \n"
    assert parse_export_file(text) == {"A": "2", "B": "x=y", "C": "", "F": "with spaces "}


def test_the_export_file_has_its_known_name() -> None:
    assert EXPORT_FILE == "env_vars_to_export"


@pytest.mark.parametrize(
    ("branch", "tag"),
    [
        ("main", "main"),
        ("feature/login-2", "featurelogin-2"),
        ("release/1.2.3", "release1.2.3"),
        ("Fix_Bug#12", "Fix_Bug12"),
        ("-.hidden", "hidden"),
        ("ünïcode", "ncode"),
        ("a" * 200, "a" * 128),
    ],
)
def test_a_branch_becomes_a_legal_docker_tag(branch: str, tag: str) -> None:
    assert normalize_branch_tag(branch) == tag


SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("branch", "revision", "expected"),
    [
        # A webhook push of a branch; a build run with --branch and --revision; a git-clone step of a branch.
        (
            "feature/Login-2",
            SHA,
            {
                "CF_BRANCH": "feature/Login-2",
                "CF_BRANCH_TAG_NORMALIZED": "featureLogin-2",
                "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": "featurelogin-2",
                "CF_REVISION": SHA,
                "CF_SHORT_REVISION": "0123456",
            },
        ),
        # A webhook tag push or release: the tag stands for the branch.
        (
            "v1.2.0",
            SHA,
            {
                "CF_BRANCH": "v1.2.0",
                "CF_BRANCH_TAG_NORMALIZED": "v1.2.0",
                "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": "v1.2.0",
                "CF_REVISION": SHA,
                "CF_SHORT_REVISION": "0123456",
            },
        ),
        # A deleted branch (no revision to build); a build run with only --branch.
        (
            "main",
            None,
            {"CF_BRANCH": "main", "CF_BRANCH_TAG_NORMALIZED": "main", "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": "main"},
        ),
        # YAML read at a SHA, a git-clone step of a commit: no branch is named.
        (None, SHA, {"CF_REVISION": SHA, "CF_SHORT_REVISION": "0123456"}),
        # A short revision stays as it is.
        (None, "abc", {"CF_REVISION": "abc", "CF_SHORT_REVISION": "abc"}),
        # A build asked for nothing in particular.
        (None, None, {}),
        ("", "", {}),
    ],
)
def test_the_branch_and_revision_variables_are_those_of_what_is_built(
    branch: str | None, revision: str | None, expected: dict[str, str]
) -> None:
    assert revision_variables(branch, revision) == expected


def test_system_variables_describe_the_build() -> None:
    assert build_system_variables(
        build_id="b-1",
        build_url="https://ci.example/builds/b-1",
        build_timestamp_ms=1714550400000,
        trigger="webhook",
        initiator="ada",
        pipeline="shop/ci",
        account="acme",
        volume_path="/codefresh/volume",
    ) == {
        "CF_BUILD_ID": "b-1",
        "CF_BUILD_URL": "https://ci.example/builds/b-1",
        "CF_BUILD_TIMESTAMP": "1714550400000",
        "CF_BUILD_TRIGGER": "webhook",
        "CF_BUILD_INITIATOR": "ada",
        "CF_PIPELINE_NAME": "shop/ci",
        "CF_VOLUME_PATH": "/codefresh/volume",
        "CF_ACCOUNT": "acme",
        "CI": "true",
    }
