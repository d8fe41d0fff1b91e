"""What each mapping in a codefresh.yml may hold, and the checks on its fields.

`Fields` is one mapping under validation; it reports located problems through the `Document` it was read
from. Here too are the shapes several places share (`when`, `retry`, hooks, success criteria) and the
built-in step types: the fields each takes and the checks particular to it. A type is extended by adding
names to `STEP_TYPES` and, where its fields need more than "unknown field", a check to `TYPE_CHECKS`.
How steps are found, named and assembled into a `Pipeline` is `parsing`'s business.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from outpost.pipelines.expressions import MAX_LENGTH, ConditionError
from outpost.pipelines.variables import is_variable_ref
from outpost.pipelines.when import ON_STATES, compile_regex
from outpost.pipelines.yamlnodes import Document, Entries, clip, is_null

# --- one mapping under validation ----------------------------------------------------------------------


def describe(value: Any) -> str:
    """A plain value as problem messages name what was found: "empty", "a list", "'latest'"..."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"'{clip(value)}'"
    return "a list" if isinstance(value, list) else "a mapping"


@dataclass
class Fields:
    """One mapping under validation: its entries, their plain values, and how problems name them.

    Checks may normalise `values` in place (a number where a string is expected becomes its text),
    so the dict handed to `Step.fields` is the checked one.
    """

    doc: Document
    at: Node  # where "is required" problems point: the step's name, or the mapping itself
    entries: Entries
    values: dict[str, Any]
    owner: str = ""  # "step 'build'"; empty at the top level
    path: str = ""  # dotted path of this mapping inside its owner, such as "retry"

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def name_of(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def key(self, name: str) -> Node:
        return self.entries[name][0]

    def node(self, name: str) -> Node:
        return self.entries[name][1]

    def problem(self, node: Node, message: str) -> None:
        self.doc.problem(node, f"{self.owner}: {message}" if self.owner else message)

    def wrong(self, name: str, expected: str) -> None:
        self.problem(self.node(name), f"`{self.name_of(name)}` must be {expected}, not {describe(self.values[name])}")

    def nested(self, node: Node, value: Any, path: str) -> Fields | None:
        if not isinstance(node, MappingNode) or not isinstance(value, dict):
            return None
        return Fields(self.doc, node, self.doc.entries(node), value, self.owner, path)

    def sub(self, name: str) -> Fields | None:
        """The mapping under `name`; a problem if it is something else. None if absent or wrong."""
        if name not in self:
            return None
        sub = self.nested(self.node(name), self.values[name], self.name_of(name))
        if sub is None:
            self.wrong(name, "a mapping")
        return sub

    def string(self, name: str) -> str | None:
        if name not in self:
            return None
        value, node = self.values[name], self.node(name)
        if isinstance(value, str):
            return value
        if isinstance(node, ScalarNode) and value is not None:
            self.values[name] = str(node.value)  # the text as written: `tag: 1.10` is "1.10", not 1.1
            return str(node.value)
        self.wrong(name, "a string")
        return None

    def strings(self, name: str) -> list[str] | None:
        """A list of plain values, kept as their text; a list or mapping inside is a problem."""
        if name not in self:
            return None
        node, value = self.node(name), self.values[name]
        if not isinstance(node, SequenceNode) or not isinstance(value, list):
            self.wrong(name, "a list")
            return None
        texts: list[str] = []
        for index, (item, item_value) in enumerate(zip(node.value, value, strict=True)):
            where = f"`{self.name_of(name)}[{index}]`"
            if isinstance(item, ScalarNode) and item_value is not None:
                texts.append(item_value if isinstance(item_value, str) else str(item.value))
            elif item_value is None:
                self.problem(item, f"{where} is empty")
            else:
                hint = " (quote an entry that contains ': ')" if isinstance(item_value, dict) else ""
                self.problem(item, f"{where} must be a plain value, not {describe(item_value)}{hint}")
        self.values[name] = texts
        return texts

    def flag(self, name: str) -> bool | str | None:
        if name not in self:
            return None
        value = self.values[name]
        if isinstance(value, bool):
            return value
        if is_variable_ref(value):
            return str(value)
        self.wrong(name, "true, false or a ${{VARIABLE}}")
        return None

    def choice(self, name: str, choices: Collection[str]) -> str | None:
        if name not in self:
            return None
        value = self.values[name]
        if isinstance(value, str) and value in choices:
            return value
        self.wrong(name, " or ".join(choices))
        return None

    def integer(self, name: str, low: int, high: int) -> None:
        value = self.values.get(name)
        if name in self and (type(value) is not int or not low <= value <= high):
            self.wrong(name, f"a whole number from {low} to {high}")

    def require(self, *names: str) -> None:
        for name in names:
            if name not in self:
                self.problem(self.at, f"`{self.name_of(name)}` is required")

    def only(self, allowed: Collection[str], what: str = "") -> None:
        for name in self.entries:
            if name not in allowed:
                close = difflib.get_close_matches(name, list(allowed), n=1)
                hint = f" (did you mean `{self.name_of(close[0])}`?)" if close else ""
                self.problem(self.key(name), f"unknown field `{self.name_of(name)}`{what}{hint}")

    def warn_unknown(self, known: Collection[str], what: str) -> None:
        """Fields tolerated as the original does, each with a warning (and the name it probably meant)."""
        for name in self.entries:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" — did you mean '{self.name_of(close[0])}'?" if close else ""
                message = f"unknown field '{self.name_of(name)}'{hint} ({what} tolerates it, and ignores it)"
                self.doc.warn(self.key(name), f"{self.owner}: {message}" if self.owner else message)

    def items(self, name: str) -> list[Fields] | None:
        """The mappings in the list under `name`; a problem for the list or any item that is not one."""
        node, value = self.node(name), self.values[name]
        if not isinstance(node, SequenceNode) or not isinstance(value, list):
            self.wrong(name, "a list")
            return None
        found: list[Fields] = []
        for index, (item_node, item) in enumerate(zip(node.value, value, strict=True)):
            nested = self.nested(item_node, item, f"{self.name_of(name)}[{index}]")
            if nested is None:
                self.problem(item_node, f"`{self.name_of(name)}[{index}]` must be a mapping, not {describe(item)}")
            else:
                found.append(nested)
        return found


def _words(*groups: str) -> frozenset[str]:
    return frozenset(name for group in groups for name in group.split())


# --- shared shapes: when, retry, hooks, success criteria ----------------------------------------------

_CONDITION_NAME = re.compile(r"[A-Za-z0-9_]+")
_RETRY_LIMITS = {"maxAttempts": (1, 10), "delay": (0, 60), "exponentialFactor": (1, 5)}
_HOOK_NAMES = ("on_elected", "on_finish", "on_success", "on_fail")
_HOOK_FIELDS = ("exec", "steps", "mode", "fail_fast", "strict_fail_fast", "metadata", "annotations")
MODES = ("sequential", "parallel")


def check_when(when: Fields) -> None:
    when.only(("branch", "condition", "steps"))
    if branch := when.sub("branch"):
        branch.only(("only", "ignore"))
        _check_branch_rules(branch, "only")
        _check_branch_rules(branch, "ignore")
    if condition := when.sub("condition"):
        _check_condition(condition)
    if "steps" in when:
        _check_when_steps(when)


def _check_branch_rules(branch: Fields, name: str) -> None:
    """Exact branch names, or /regular expressions/ that must compile with JavaScript's flags."""
    if branch.strings(name) is None:
        return
    for index, item in enumerate(branch.node(name).value):
        if isinstance(item, ScalarNode) and str(item.value).startswith("/"):
            try:
                compile_regex(str(item.value))
            except ConditionError as error:
                branch.problem(item, f"`{branch.name_of(name)}[{index}]`: {error}")


def _check_condition(condition: Fields) -> None:
    condition.only(("all", "any"))
    for group in (condition.sub("all"), condition.sub("any")):
        if group is not None:
            _check_expressions(group)


def _check_expressions(group: Fields) -> None:
    for name in group.entries:
        if not _CONDITION_NAME.fullmatch(name):
            group.problem(group.key(name), f"condition name '{name}' may use only letters, digits and _")
        expression = group.string(name)
        if expression is not None and len(expression) > MAX_LENGTH:
            group.problem(group.node(name), f"the condition is longer than {MAX_LENGTH} characters")


def _check_when_steps(when: Fields) -> None:
    """`steps` is a list of {name, on}, or a mapping whose `all` or `any` holds such a list."""
    if isinstance(when.values["steps"], list):
        lists = [(when, "steps")]
    elif groups := when.sub("steps"):
        groups.only(("all", "any"))
        lists = [(groups, name) for name in ("all", "any") if name in groups]
    else:
        return
    for owner, name in lists:
        for entry in owner.items(name) or []:
            _check_step_condition(entry)


def _check_step_condition(entry: Fields) -> None:
    entry.only(("name", "on"))
    entry.require("name")
    entry.string("name")
    if entry.strings("on") is None:
        return
    for item in entry.node("on").value:  # each state where it is written, which may be its own line
        if isinstance(item, ScalarNode) and not is_null(item) and item.value not in ON_STATES:
            entry.problem(item, f"unknown step state '{item.value}' in `{entry.name_of('on')}`")


def check_retry(retry: Fields) -> None:
    retry.only(_RETRY_LIMITS)
    for name, (low, high) in _RETRY_LIMITS.items():
        retry.integer(name, low, high)


def check_hooks(hooks: Fields) -> None:
    hooks.only(_HOOK_NAMES, " (hooks are on_elected, on_finish, on_success, on_fail)")
    for name in _HOOK_NAMES:
        if (hook := hooks.sub(name)) is None:
            continue
        hook.only(_HOOK_FIELDS)
        hook.choice("mode", MODES)
        hook.flag("fail_fast")
        hook.flag("strict_fail_fast")
        if "exec" in hook and isinstance(hook.values["exec"], list):
            hook.strings("exec")
        elif "exec" in hook:
            hook.sub("exec")
        hook.sub("steps")


def check_success_criteria(criteria: Fields) -> None:
    criteria.only(("steps", "condition"))
    if steps := criteria.sub("steps"):
        steps.only(("only", "ignore"))
        steps.strings("only")
        steps.strings("ignore")
    if condition := criteria.sub("condition"):
        _check_condition(condition)


# --- the top level and the step types ----------------------------------------------------------------

TOP_LEVEL_FIELDS = _words(
    "version mode stages steps hooks fail_fast strict_fail_fast success_criteria indicators services",
    "build_version",
)


@dataclass(frozen=True)
class StepKind:
    """What a built-in step type takes besides the common fields; `fields=None` tolerates any field."""

    fields: frozenset[str] | None
    required: tuple[str, ...] = ()


COMMON_FIELDS = _words(
    "type title description stage fail_fast strict_fail_fast when retry timeout hooks",
    "on_success on_fail on_finish arguments scale matrix",
)
_ECR = "provider accessKeyId secretAccessKey region role_arn aws_session_name aws_duration_seconds"
# Built from the pipeline spec (§2.1-2.8); a later issue extends a type by adding names here.
STEP_TYPES: dict[str, StepKind] = {
    "freestyle": StepKind(None, ("image",)),
    "git-clone": StepKind(
        _words(
            "repo git revision credentials depth exclude_blobs use_proxy skip_tags_on_update",
            "working_directory",
        ),
        ("repo",),
    ),
    "build": StepKind(
        _words(
            "image_name tag tags tag_policy dockerfile working_directory build_arguments target no_cache",
            "no_cf_cache squash cache_from cache_to registry registry_contexts disable_push buildkit",
            "progress ssh secrets buildx platform metadata annotations cosign",
            _ECR,
        ),
        ("image_name",),
    ),
    "push": StepKind(
        _words("candidate tag tags image_name registry registry_context credentials", _ECR), ("candidate",)
    ),
    "composition": StepKind(
        _words("composition composition_candidates composition_variables working_directory registry_contexts"),
        ("composition", "composition_candidates"),
    ),
    "launch-composition": StepKind(
        _words("composition environment_name composition_variables working_directory entry_point"),
        ("composition",),
    ),
    # `rollback_on_failure` is Outpost's own (docs/deploy.md); `namespace` defaults to the integration's.
    "deploy": StepKind(
        _words("kind cluster namespace service candidate file_path rollback_on_failure"), ("kind", "cluster")
    ),
    "parallel": StepKind(_words("steps success_criteria")),
    "pending-approval": StepKind(frozenset()),
    "services": StepKind(None),
}
# Older spellings the original product still renames; Step.fields holds the current name.
LEGACY_NAMES = {
    "fail-fast": "fail_fast",
    "working-directory": "working_directory",
    "image-name": "image_name",
    "build-arguments": "build_arguments",
}
TYPED_STEP = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?::[\w.+-]+)?")


# What a freestyle step reads (spec §2.1); it tolerates any other field, with a warning.
FREESTYLE_FIELDS = _words("image working_directory commands cmd entry_point environment shell volumes services")
FREESTYLE_FIELDS |= _words("registry_context")
# Outpost's own fields (not the original's): files a freestyle step leaves for the build page, collected by the
# runner after the step whatever its result. Globs relative to the step's working directory, or under
# /codefresh/volume; nothing outside the build volume (docs/artifacts.md).
OUTPUT_FIELDS = _words("artifacts junit")
VOLUME_PREFIX = "/codefresh/volume"


def output_path_problem(pattern: str) -> str | None:
    """Why a path or glob of `artifacts`/`junit` could reach outside the build volume; None if it cannot."""
    if not pattern.strip():
        return "is empty"
    if "\x00" in pattern:
        return "contains a NUL character"
    rest = pattern
    if pattern.startswith("/"):
        if pattern != VOLUME_PREFIX and not pattern.startswith(VOLUME_PREFIX + "/"):
            return f"must be relative to the step's working directory or under {VOLUME_PREFIX}, not '{clip(pattern)}'"
        rest = pattern[len(VOLUME_PREFIX) :]
    if ".." in rest.split("/"):
        return f"may not climb out with '..': '{clip(pattern)}'"
    return None


def _check_outputs(step: Fields) -> None:
    for name in ("artifacts", "junit"):
        if name not in step:
            continue
        node = step.node(name)
        if step.strings(name) is None:
            continue
        for index, item in enumerate(node.value):
            if isinstance(item, ScalarNode) and not is_null(item) and (why := output_path_problem(str(item.value))):
                step.problem(item, f"`{name}[{index}]` {why}")


def _check_freestyle(step: Fields) -> None:
    step.warn_unknown(COMMON_FIELDS | FREESTYLE_FIELDS | OUTPUT_FIELDS, "a freestyle step")
    _check_outputs(step)
    for name in ("image", "working_directory", "registry_context"):
        step.string(name)
    step.strings("commands")
    step.strings("volumes")
    step.choice("shell", ("sh", "bash"))
    for name in ("cmd", "entry_point"):
        if isinstance(step.values.get(name), list):
            step.strings(name)
        else:
            step.string(name)
    for other in ("commands", "shell"):
        if "cmd" in step and other in step:
            step.problem(step.key("cmd"), f"`cmd` cannot be used together with `{other}`")
    _check_environment(step)
    if "services" in step and not isinstance(step.values["services"], list | dict):
        step.wrong("services", "a list of service names or a mapping")


def _check_environment(step: Fields) -> None:
    if "environment" not in step:
        return
    if isinstance(step.values["environment"], dict):
        hint = "write it as a list of KEY=VALUE strings: `- KEY=VALUE`"
        step.problem(step.node("environment"), f"`environment` must be a list, not a mapping; {hint}")
        return
    if step.strings("environment") is None:
        return
    for index, item in enumerate(step.node("environment").value):
        if not isinstance(item, ScalarNode) or is_null(item):
            continue  # already reported by strings()
        key, sep, _ = str(item.value).partition("=")
        if not sep or not key.strip():
            step.problem(item, f"`environment[{index}]` must be KEY=VALUE, not '{clip(str(item.value))}'")


def _check_git_clone(step: Fields) -> None:
    for name in ("repo", "git", "revision", "working_directory"):
        step.string(name)
    for name in ("exclude_blobs", "use_proxy", "skip_tags_on_update"):
        step.flag(name)
    if credentials := step.sub("credentials"):
        credentials.only(("username", "password"))


def _check_build(step: Fields) -> None:
    for name in ("image_name", "tag", "working_directory", "target", "registry", "platform", "progress"):
        step.string(name)
    step.strings("tags")
    step.strings("build_arguments")
    step.choice("tag_policy", ("original", "lowercase"))
    for name in ("no_cache", "no_cf_cache", "squash", "disable_push", "buildkit"):
        step.flag(name)
    if isinstance(step.values.get("dockerfile"), dict) and (inline := step.sub("dockerfile")):
        inline.only(("content",))
        inline.require("content")
        inline.string("content")
    else:
        step.string("dockerfile")
    if not isinstance(step.values.get("buildx"), dict):
        step.flag("buildx")
    if "platform" in step and not step.values.get("buildx"):
        step.problem(step.key("platform"), "`platform` needs `buildx`")


def _check_push(step: Fields) -> None:
    for name in ("candidate", "tag", "image_name", "registry", "registry_context"):
        step.string(name)
    step.strings("tags")


def _check_composition(step: Fields) -> None:
    if not isinstance(step.values.get("composition"), dict):
        step.string("composition")
    step.string("working_directory")
    step.strings("composition_variables")
    if candidates := step.sub("composition_candidates"):
        for name in candidates.entries:
            candidates.sub(name)


def _check_deploy(step: Fields) -> None:
    step.choice("kind", ("kubernetes",))
    for name in ("cluster", "namespace", "service", "file_path"):
        step.string(name)
    if "service" in step and "file_path" in step:
        step.problem(step.key("file_path"), "use either `service` or `file_path`, not both")
    elif "service" not in step and "file_path" not in step:
        step.problem(step.at, "`service` or `file_path` is required for a deploy step")
    if "candidate" in step and "service" not in step:
        step.problem(step.key("candidate"), "`candidate` only goes with `service`")
    elif "service" in step and "candidate" not in step:
        # Codefresh's own documentation has a deploy step like this, so it loads; it cannot run without an image.
        step.doc.warn(
            step.key("service"),
            f"{step.owner}: `service` without a `candidate`: the step will fail when it runs, "
            "for want of the `image` to deploy",
        )
    if candidate := step.sub("candidate"):
        candidate.only(("image", "registry"))
        candidate.require("image")
        candidate.string("image")
        candidate.string("registry")
    step.flag("rollback_on_failure")
    timeout = step.values.get("timeout")
    if "timeout" in step and not re.fullmatch(r"\d+", str(timeout)):
        step.wrong("timeout", "a number of seconds such as '120'")


def _check_pending_approval(step: Fields) -> None:
    if (timeout := step.sub("timeout")) is None:
        return
    timeout.only(("duration", "timeUnit", "finalState"))
    timeout.choice("timeUnit", ("hours", "minutes"))
    timeout.choice("finalState", ("approved", "denied", "terminated"))
    duration = timeout.values.get("duration")
    if "duration" in timeout and (isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0):
        timeout.wrong("duration", "a positive number")


def _check_parallel(step: Fields) -> None:
    if criteria := step.sub("success_criteria"):
        check_success_criteria(criteria)
    if "hooks" in step:
        step.problem(step.key("hooks"), "a parallel step cannot have hooks (give them to its steps)")


TYPE_CHECKS: dict[str, Callable[[Fields], None]] = {
    "freestyle": _check_freestyle,
    "git-clone": _check_git_clone,
    "build": _check_build,
    "push": _check_push,
    "composition": _check_composition,
    "launch-composition": _check_composition,
    "deploy": _check_deploy,
    "pending-approval": _check_pending_approval,
    "parallel": _check_parallel,
}
