"""Pipeline variables: `${{NAME}}` substitution, the `cf_export` file and the CF_* system variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar, cast

T = TypeVar("T")

EXPORT_FILE = "env_vars_to_export"  # under CF_VOLUME_PATH; `cf_export` appends KEY=VALUE lines to it

_REFERENCE = re.compile(r"\$\{\{(.+?)\}\}")
# No braces inside, so `${{A}}${{B}}` is two references and not one named `A}}${{B`.
_WHOLE_REFERENCE = re.compile(r"\$\{\{([^{}]+)\}\}")
_EXPORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a shell accepts as a variable name
_NOT_IN_DOCKER_TAG = re.compile(r"[^A-Za-z0-9_.-]")
_DOCKER_TAG_MAX = 128


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace every `${{NAME}}` whose NAME is defined; an undefined one stays exactly as written.

    Spaces just inside the braces are ignored. Substituted values are not scanned again, so a value
    that itself contains `${{...}}` reaches the step unchanged.
    """

    def replace(match: re.Match[str]) -> str:
        value = variables.get(match.group(1).strip())
        return match.group(0) if value is None else value

    return _REFERENCE.sub(replace, text)


def substitute_all(value: T, variables: Mapping[str, str]) -> T:
    """`substitute` in every string of nested str, list and dict values (keys too); others are kept."""
    return cast(T, _substitute_any(value, variables))


def _substitute_any(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, variables)
    if isinstance(value, list):
        return [_substitute_any(item, variables) for item in value]
    if isinstance(value, dict):
        return {_substitute_any(k, variables): _substitute_any(v, variables) for k, v in value.items()}
    return value


def is_variable_ref(s: object) -> bool:
    """True when `s` is one whole `${{VAR}}` reference, as boolean fields such as `fail_fast` accept."""
    if not isinstance(s, str):
        return False
    match = _WHOLE_REFERENCE.fullmatch(s)
    return match is not None and bool(match.group(1).strip())


def parse_export_file(text: str) -> dict[str, str]:
    """Read the `cf_export` file: KEY=VALUE per line, later lines win.

    Blank lines and lines that are not `NAME=...` with a shell variable name are ignored; the value is
    everything after the first `=`, kept as written (it may contain `=` and spaces).
    """
    exported: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and _EXPORT_NAME.fullmatch(name):
            exported[name] = value
    return exported


def normalize_branch_tag(branch: str) -> str:
    """The branch as a usable Docker tag (CF_BRANCH_TAG_NORMALIZED): `feature/login-2` gives `featurelogin-2`.

    Characters a tag may not hold are removed, as are the `.` and `-` a tag may not start with; the
    result is cut to the 128 characters a tag may have.
    """
    tag = _NOT_IN_DOCKER_TAG.sub("", branch).lstrip(".-")
    return tag[:_DOCKER_TAG_MAX]


def revision_variables(branch: str | None, revision: str | None) -> dict[str, str]:
    """The CF_* variables of what is built: CF_BRANCH with its Docker-tag forms, CF_REVISION and CF_SHORT_REVISION.
    An unknown branch or revision (None or empty) leaves its variables out rather than empty. Every source of them
    (a webhook's event, a build asked for a branch, the commit its YAML was read at, a git-clone step) says the
    same through this function."""
    variables: dict[str, str] = {}
    if branch:
        tag = normalize_branch_tag(branch)
        variables |= {
            "CF_BRANCH": branch,
            "CF_BRANCH_TAG_NORMALIZED": tag,
            "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": tag.lower(),
        }
    if revision:
        variables |= {"CF_REVISION": revision, "CF_SHORT_REVISION": revision[:7]}
    return variables


def build_system_variables(
    *,
    build_id: str,
    build_url: str,
    build_timestamp_ms: int,
    trigger: str,
    initiator: str,
    pipeline: str,
    account: str,
    volume_path: str,
) -> dict[str, str]:
    """The CF_* variables every build has, whatever triggered it (`trigger` is `build` or `webhook`)."""
    return {
        "CF_BUILD_ID": build_id,
        "CF_BUILD_URL": build_url,
        "CF_BUILD_TIMESTAMP": str(build_timestamp_ms),
        "CF_BUILD_TRIGGER": trigger,
        "CF_BUILD_INITIATOR": initiator,
        "CF_PIPELINE_NAME": pipeline,
        "CF_VOLUME_PATH": volume_path,
        "CF_ACCOUNT": account,
        "CI": "true",
    }
