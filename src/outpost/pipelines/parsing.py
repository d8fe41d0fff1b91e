"""Reads codefresh.yml text into a `Pipeline`, or raises `PipelineError` listing every problem found.

The YAML is composed into PyYAML's node graph rather than loaded, so every key and value keeps its line
and column; validation walks that graph next to the plain Python values built from it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from outpost.errors import PipelineError, Problem
from outpost.pipelines.spec import Location, Pipeline, Step
from outpost.pipelines.variables import is_variable_ref

# --- YAML with locations ---------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT, _SEQ, _MAP, _MERGE = (
    _TAG + t for t in ("str", "null", "bool", "int", "float", "seq", "map", "merge")
)
# The YAML 1.2 core schema, as Codefresh's JavaScript reader uses: `on`, `yes` and `1:30` stay strings
# (YAML 1.1 would read the `on:` of `when.steps` as `true`), and dates stay strings.
_CORE_SCHEMA = (
    (_NULL, r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    (_BOOL, r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    (_INT, r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    (
        _FLOAT,
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        list("-+.0123456789"),
    ),
    (_MERGE, r"<<", ["<"]),
)
_MAX_VALUES = 100_000  # more than this through aliases is a "billion laughs" file, not a pipeline


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the core-schema resolvers below; only its composer is used."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # YAML lets a later anchor reuse a name (aliases then mean the newer node); PyYAML alone refuses it.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if not isinstance(event, yaml.AliasEvent) and event.anchor is not None:
            self.anchors.pop(event.anchor, None)
        return super().compose_node(parent, index)


for _tag, _pattern, _first in _CORE_SCHEMA:
    _Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), _first)


class _TooLarge(Exception):
    """Aliases expand the file past `_MAX_VALUES`; stop converting at once."""


Entries = dict[str, tuple[Node, Node]]  # key name -> (key node, value node), in file order


class _Doc:
    """One file being read: collects problems and turns nodes into plain values."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._problems: dict[Problem, None] = {}  # ordered, and drops repeats from nodes seen twice
        self._budget = _MAX_VALUES
        self._open: set[int] = set()  # collections being converted or merged, to catch alias loops

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems)

    def problem(self, node: Node, message: str) -> None:
        self.problem_at(node.start_mark.line + 1, node.start_mark.column + 1, message)

    def problem_at(self, line: int, column: int, message: str) -> None:
        self._problems[Problem(self.file, line, column, message)] = None

    def entries(self, node: MappingNode) -> Entries:
        """The mapping's keys with `<<` merges resolved: own keys win, then earlier merged mappings."""
        own: Entries = {}
        for key, value in node.value:
            name = None if key.tag == _MERGE else self._key_name(key)
            if name is not None and name in own:
                first = own[name][0].start_mark.line + 1
                self.problem(key, f"duplicate key '{name}' (first on line {first})")
            elif name is not None:
                own[name] = (key, value)
        result: Entries = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                for name, pair in self._merged(value).items():
                    if name not in own:
                        result.setdefault(name, pair)
            elif (name := self._key_name(key)) is not None and name in own and name not in result:
                result[name] = own[name]
        return result

    def _merged(self, value: Node) -> Entries:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        mappings = [source for source in sources if isinstance(source, MappingNode)]
        if len(mappings) != len(sources):
            self.problem(value, "`<<` must merge a mapping or a list of mappings")
            return {}
        merged: Entries = {}
        for source in mappings:
            for name, pair in self._merged_source(source).items():
                merged.setdefault(name, pair)
        return merged

    def _merged_source(self, source: MappingNode) -> Entries:
        if id(source) in self._open:
            self.problem(source, "a `<<` merge includes the mapping it is in")
            return {}
        self._open.add(id(source))
        try:
            return self.entries(source)
        finally:
            self._open.discard(id(source))

    def _key_name(self, key: Node) -> str | None:
        if isinstance(key, ScalarNode):
            return str(key.value)
        self.problem(key, "a key must be a plain value, not a list or a mapping")
        return None

    def plain(self, node: Node) -> Any:
        """The node as plain Python values (dict, list, str, int, float, bool, None)."""
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self._open:
            self.problem(node, "an alias refers to a node that contains it")
            return None
        self._open.add(id(node))
        try:
            return self._collection(node)
        finally:
            self._open.discard(id(node))

    def _collection(self, node: Node) -> Any:
        if node.tag not in (_SEQ, _MAP):
            self.problem(node, f"unsupported YAML tag {_show_tag(node.tag)}")
        if isinstance(node, SequenceNode):
            return [self.plain(item) for item in node.value]
        assert isinstance(node, MappingNode)
        return {name: self.plain(value) for name, (_, value) in self.entries(node).items()}

    def _scalar(self, node: ScalarNode) -> Any:
        text: str = node.value
        if node.tag == _STR:
            return text
        if node.tag == _NULL:
            return None
        try:
            if node.tag == _BOOL:
                return {"true": True, "false": False}[text.lower()]
            if node.tag == _INT:
                return _to_int(text)
            if node.tag == _FLOAT:
                return _to_float(text)
        except (KeyError, ValueError):
            self.problem(node, f"'{_clip(text)}' is not a valid {_show_tag(node.tag)} value")
            return text
        self.problem(node, f"unsupported YAML tag {_show_tag(node.tag)}")
        return text


def _to_int(text: str) -> int:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)


def _to_float(text: str) -> float:
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    return special[text.lower()] if text.lower() in special else float(text)


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compose(text: str, doc: _Doc) -> Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        _yaml_problem(exc, doc)
    except yaml.reader.ReaderError as exc:
        _reader_problem(exc, text, doc)
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error we know carries a mark
        doc.problem_at(1, 1, f"invalid YAML: {exc}")
    except RecursionError:
        doc.problem_at(1, 1, "the YAML is nested too deeply")
    return None


def _yaml_problem(exc: yaml.MarkedYAMLError, doc: _Doc) -> None:
    mark = exc.problem_mark or exc.context_mark
    doc.problem_at(mark.line + 1 if mark else 1, mark.column + 1 if mark else 1, f"invalid YAML: {_yaml_message(exc)}")


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    problem, context = exc.problem or "", exc.context or ""
    if problem.startswith("but "):  # "expected a single document in the stream, but found another document"
        return f"{context}, {problem}"
    if "'\\t'" in problem:
        return f"{problem} (indent with spaces, not tabs)"
    if problem and context and exc.context_mark:
        return f"{problem} ({context} on line {exc.context_mark.line + 1})"
    return problem or context


def _reader_problem(exc: yaml.reader.ReaderError, text: str, doc: _Doc) -> None:
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, decoded with errors="surrogateescape"
        doc.problem_at(line, column, f"the file is not valid UTF-8 (byte 0x{code - 0xDC00:02x})")
    else:
        doc.problem_at(line, column, f"the file holds a character YAML does not allow (U+{code:04X})")


def _decode(data: str | bytes, doc: _Doc) -> str | None:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        doc.problem_at(line, column, f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x})")
        return None


# --- field checks ------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"'{_clip(value)}'"
    return "a list" if isinstance(value, list) else "a mapping"


@dataclass
class _Fields:
    """One mapping under validation: its entries, their plain values, and how problems name them.

    Checks may normalise `values` in place (a number where a string is expected becomes its text),
    so the dict handed to `Step.fields` is the checked one.
    """

    doc: _Doc
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
        self.problem(self.node(name), f"`{self.name_of(name)}` must be {expected}, not {_describe(self.values[name])}")

    def nested(self, node: Node, value: Any, path: str) -> _Fields | None:
        if not isinstance(node, MappingNode) or not isinstance(value, dict):
            return None
        return _Fields(self.doc, node, self.doc.entries(node), value, self.owner, path)

    def sub(self, name: str) -> _Fields | None:
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
                self.problem(item, f"{where} must be a plain value, not {_describe(item_value)}{hint}")
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

    def items(self, name: str) -> list[_Fields] | None:
        """The mappings in the list under `name`; a problem for the list or any item that is not one."""
        node, value = self.node(name), self.values[name]
        if not isinstance(node, SequenceNode) or not isinstance(value, list):
            self.wrong(name, "a list")
            return None
        found: list[_Fields] = []
        for index, (item_node, item) in enumerate(zip(node.value, value, strict=True)):
            nested = self.nested(item_node, item, f"{self.name_of(name)}[{index}]")
            if nested is None:
                self.problem(item_node, f"`{self.name_of(name)}[{index}]` must be a mapping, not {_describe(item)}")
            else:
                found.append(nested)
        return found


def _words(*groups: str) -> frozenset[str]:
    return frozenset(name for group in groups for name in group.split())


# --- shared shapes: when, retry, hooks, success criteria ----------------------------------------------

_STEP_STATES = _words("success failure skipped finished pending running terminating terminated approved denied")
_CONDITION_NAME = re.compile(r"[A-Za-z0-9_]+")
_MAX_EXPRESSION = 12_000
_RETRY_LIMITS = {"maxAttempts": (1, 10), "delay": (0, 60), "exponentialFactor": (1, 5)}
_HOOK_NAMES = ("on_elected", "on_finish", "on_success", "on_fail")
_HOOK_FIELDS = ("exec", "steps", "mode", "fail_fast", "strict_fail_fast", "metadata", "annotations")
_MODES = ("sequential", "parallel")


def _check_when(when: _Fields) -> None:
    when.only(("branch", "condition", "steps"))
    if branch := when.sub("branch"):
        branch.only(("only", "ignore"))
        branch.strings("only")
        branch.strings("ignore")
    if condition := when.sub("condition"):
        _check_condition(condition)
    if "steps" in when:
        _check_when_steps(when)


def _check_condition(condition: _Fields) -> None:
    condition.only(("all", "any"))
    for group in (condition.sub("all"), condition.sub("any")):
        if group is not None:
            _check_expressions(group)


def _check_expressions(group: _Fields) -> None:
    for name in group.entries:
        if not _CONDITION_NAME.fullmatch(name):
            group.problem(group.key(name), f"condition name '{name}' may use only letters, digits and _")
        expression = group.string(name)
        if expression is not None and len(expression) > _MAX_EXPRESSION:
            group.problem(group.node(name), f"the condition is longer than {_MAX_EXPRESSION} characters")


def _check_when_steps(when: _Fields) -> None:
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


def _check_step_condition(entry: _Fields) -> None:
    entry.only(("name", "on"))
    entry.require("name")
    entry.string("name")
    for state in entry.strings("on") or []:
        if state not in _STEP_STATES:
            entry.problem(entry.node("on"), f"unknown step state '{state}' in `{entry.name_of('on')}`")


def _check_retry(retry: _Fields) -> None:
    retry.only(_RETRY_LIMITS)
    for name, (low, high) in _RETRY_LIMITS.items():
        retry.integer(name, low, high)


def _check_hooks(hooks: _Fields) -> None:
    hooks.only(_HOOK_NAMES, " (hooks are on_elected, on_finish, on_success, on_fail)")
    for name in _HOOK_NAMES:
        if (hook := hooks.sub(name)) is None:
            continue
        hook.only(_HOOK_FIELDS)
        hook.choice("mode", _MODES)
        hook.flag("fail_fast")
        hook.flag("strict_fail_fast")
        if "exec" in hook and isinstance(hook.values["exec"], list):
            hook.strings("exec")
        elif "exec" in hook:
            hook.sub("exec")
        hook.sub("steps")


def _check_success_criteria(criteria: _Fields) -> None:
    criteria.only(("steps", "condition"))
    if steps := criteria.sub("steps"):
        steps.only(("only", "ignore"))
        steps.strings("only")
        steps.strings("ignore")
    if condition := criteria.sub("condition"):
        _check_condition(condition)


# --- step types ----------------------------------------------------------------------------------------


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
    "deploy": StepKind(_words("kind cluster namespace service candidate file_path"), ("kind", "cluster", "namespace")),
    "parallel": StepKind(_words("steps success_criteria")),
    "pending-approval": StepKind(frozenset()),
    "services": StepKind(None),
}
# Older spellings the original product still renames; Step.fields holds the current name.
_LEGACY_NAMES = {
    "fail-fast": "fail_fast",
    "working-directory": "working_directory",
    "image-name": "image_name",
    "build-arguments": "build_arguments",
}
_TYPED_STEP = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?::[\w.+-]+)?")
_DURATION = re.compile(r"(\d*\.?\d*)([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _check_freestyle(step: _Fields) -> None:
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


def _check_environment(step: _Fields) -> None:
    if "environment" not in step:
        return
    if isinstance(step.values["environment"], dict):
        hint = "write it as a list of KEY=VALUE strings: `- KEY=VALUE`"
        step.problem(step.node("environment"), f"`environment` must be a list, not a mapping; {hint}")
        return
    if step.strings("environment") is None:
        return
    for index, item in enumerate(step.node("environment").value):
        if not isinstance(item, ScalarNode) or item.tag == _NULL:
            continue  # already reported by strings()
        key, sep, _ = str(item.value).partition("=")
        if not sep or not key.strip():
            step.problem(item, f"`environment[{index}]` must be KEY=VALUE, not '{_clip(str(item.value))}'")


def _check_git_clone(step: _Fields) -> None:
    for name in ("repo", "git", "revision", "working_directory"):
        step.string(name)
    for name in ("exclude_blobs", "use_proxy", "skip_tags_on_update"):
        step.flag(name)
    if credentials := step.sub("credentials"):
        credentials.only(("username", "password"))


def _check_build(step: _Fields) -> None:
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


def _check_push(step: _Fields) -> None:
    for name in ("candidate", "tag", "image_name", "registry", "registry_context"):
        step.string(name)
    step.strings("tags")


def _check_composition(step: _Fields) -> None:
    if not isinstance(step.values.get("composition"), dict):
        step.string("composition")
    step.string("working_directory")
    step.strings("composition_variables")
    if candidates := step.sub("composition_candidates"):
        for name in candidates.entries:
            candidates.sub(name)


def _check_deploy(step: _Fields) -> None:
    step.choice("kind", ("kubernetes",))
    for name in ("cluster", "namespace", "service", "file_path"):
        step.string(name)
    if "service" in step and "file_path" in step:
        step.problem(step.key("file_path"), "use either `service` or `file_path`, not both")
    elif "service" not in step and "file_path" not in step:
        step.problem(step.at, "`service` or `file_path` is required for a deploy step")
    if "candidate" in step and "service" not in step:
        step.problem(step.key("candidate"), "`candidate` only goes with `service`")
    step.sub("candidate")
    timeout = step.values.get("timeout")
    if "timeout" in step and not re.fullmatch(r"\d+", str(timeout)):
        step.wrong("timeout", "a number of seconds such as '120'")


def _check_pending_approval(step: _Fields) -> None:
    if (timeout := step.sub("timeout")) is None:
        return
    timeout.only(("duration", "timeUnit", "finalState"))
    timeout.choice("timeUnit", ("hours", "minutes"))
    timeout.choice("finalState", ("approved", "denied", "terminated"))
    duration = timeout.values.get("duration")
    if "duration" in timeout and (isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0):
        timeout.wrong("duration", "a positive number")


def _check_parallel(step: _Fields) -> None:
    if criteria := step.sub("success_criteria"):
        _check_success_criteria(criteria)
    if "hooks" in step:
        step.problem(step.key("hooks"), "a parallel step cannot have hooks (give them to its steps)")


_TYPE_CHECKS: dict[str, Callable[[_Fields], None]] = {
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


# --- steps ---------------------------------------------------------------------------------------------

_NAME_FORBIDDEN = ".#$[]/"  # `/` too: step names appear in URLs
_MAX_NAME = 150


@dataclass
class _Context:
    """What every step is checked against: the pipeline's stages and mode, and the names taken so far."""

    doc: _Doc
    stages: list[str]
    mode: str
    fail_fast: bool | str
    names: dict[str, Node] = field(default_factory=dict)

    def claim(self, key: Node, name: str) -> None:
        bad = sorted({c for c in name if c in _NAME_FORBIDDEN})
        if not name.strip():
            self.doc.problem(key, "a step name cannot be empty")
        elif len(name) > _MAX_NAME:
            self.doc.problem(key, f"step name '{_clip(name)}' is longer than {_MAX_NAME} characters")
        elif bad:
            shown = " ".join(bad)
            self.doc.problem(key, f"step name '{name}' contains {shown} (names cannot contain . # $ [ ] /)")
        if name in self.names:
            first = self.names[name].start_mark.line + 1
            self.doc.problem(key, f"step name '{name}' is already used on line {first}")
        else:
            self.names[name] = key


def _read_steps(owner: _Fields, ctx: _Context, parent: Step | None = None) -> list[Step]:
    if "steps" not in owner:
        owner.require("steps")
        return []
    if owner.values["steps"] is None or owner.values["steps"] == {}:
        owner.problem(owner.node("steps"), f"`{owner.name_of('steps')}` needs at least one step")
        return []
    steps = owner.sub("steps")
    if steps is None:
        return []
    read = [_read_step(steps, name, ctx, parent) for name in steps.entries]
    return [step for step in read if step is not None]


def _read_step(steps: _Fields, name: str, ctx: _Context, parent: Step | None) -> Step | None:
    key, node = steps.entries[name]
    ctx.claim(key, name)
    values = steps.values[name]
    if not isinstance(node, MappingNode) or not isinstance(values, dict):
        ctx.doc.problem(node, f"step '{name}' must be a mapping of fields, not {_describe(values)}")
        return None
    fields = _Fields(ctx.doc, key, dict(ctx.doc.entries(node)), dict(values), f"step '{name}'")
    kind = _read_type(fields)
    if kind is None:
        return None
    _merge_arguments(fields, keep=kind not in STEP_TYPES)
    _rename_legacy(fields)
    if parent is not None and kind == "pending-approval":
        fields.problem(fields.node("type"), "a parallel step cannot contain a pending-approval step")
    _check_fields(fields, kind, ctx)
    step = Step(
        name=name,
        type=kind,
        fields=fields.values,
        location=Location(key.start_mark.line + 1, key.start_mark.column + 1),
        title=fields.string("title"),
        description=fields.string("description"),
        stage=_read_stage(fields, ctx),
        fail_fast=_read_fail_fast(fields, ctx),
        timeout=_read_timeout(fields, kind, parent),
        when=fields.values["when"] if isinstance(fields.values.get("when"), dict) else None,
    )
    if kind == "parallel":
        step.steps = _read_steps(fields, ctx, step)
    return step


def _read_type(step: _Fields) -> str | None:
    if "type" not in step:
        return "freestyle"
    kind = step.values["type"]
    if isinstance(kind, str) and (kind in STEP_TYPES or is_variable_ref(kind) or _TYPED_STEP.fullmatch(kind)):
        return kind
    if isinstance(kind, str):
        step.problem(
            step.node("type"),
            f"unknown step type '{_clip(kind)}' (use a built-in type or `[account/]name[:version]`)",
        )
    else:
        step.wrong("type", "a step type such as freestyle")
    return None


def _merge_arguments(step: _Fields, *, keep: bool) -> None:
    """Lift `arguments` into the step; typed steps keep them too, as their step-type manifest takes them."""
    arguments = step.sub("arguments")
    if arguments is None:
        return
    for name, pair in arguments.entries.items():
        if keep and name == "timeout":
            continue  # a typed step's own `timeout` argument is not the step's timeout
        step.entries[name] = pair
        step.values[name] = arguments.values[name]
    if not keep:
        del step.entries["arguments"], step.values["arguments"]


def _rename_legacy(step: _Fields) -> None:
    for old, new in _LEGACY_NAMES.items():
        if old in step and new in step:
            step.problem(step.key(old), f"`{old}` and `{new}` are the same field; keep only `{new}`")
        elif old in step:
            step.entries[new] = step.entries.pop(old)
            step.values[new] = step.values.pop(old)


def _check_fields(step: _Fields, kind: str, ctx: _Context) -> None:
    spec = STEP_TYPES.get(kind, StepKind(None))
    if spec.fields is not None:
        step.only(COMMON_FIELDS | spec.fields, f" for a {kind} step")
    if check := _TYPE_CHECKS.get(kind):
        check(step)
    step.flag("strict_fail_fast")
    if when := step.sub("when"):
        _check_when(when)
    if retry := step.sub("retry"):
        _check_retry(retry)
    if hooks := step.sub("hooks"):
        _check_hooks(hooks)
    for name in ("on_success", "on_fail", "on_finish"):
        if post := step.sub(name):
            post.only(("metadata", "annotations"))
    _check_required(step, kind, spec, _variants(step, kind, spec, ctx))


def _variants(step: _Fields, kind: str, spec: StepKind, ctx: _Context) -> list[tuple[Node, str, set[str]]]:
    """The field sets a step runs with: its own (plus any `matrix` field), or one per `scale` child."""
    own = set(step.entries)
    if "scale" not in step and "matrix" not in step:
        return [(step.at, step.owner, own)]
    if ctx.mode == "parallel":
        implicit = "scale" if "scale" in step else "matrix"
        step.problem(step.key(implicit), f"`{implicit}` cannot be used with `mode: parallel`")
    if "scale" in step and "matrix" in step:
        step.problem(step.key("matrix"), "use either `scale` or `matrix`, not both")
    allowed = None if spec.fields is None else COMMON_FIELDS | spec.fields
    if matrix := step.sub("matrix"):
        _check_matrix(matrix, allowed)
        own |= set(matrix.entries)
    scale = step.sub("scale")
    if scale is None:
        return [(step.at, step.owner, own)]
    return [
        (scale.key(child), f"{step.owner} (scale '{child}')", own | fields)
        for child, fields in _scale_children(scale, ctx, allowed)
    ]


def _check_matrix(matrix: _Fields, allowed: Collection[str] | None) -> None:
    if allowed is not None:
        matrix.only(allowed)
    if not matrix.entries:
        matrix.problem(matrix.at, "`matrix` needs at least one field")
    for name in matrix.entries:
        if not isinstance(matrix.values[name], list) or not matrix.values[name]:
            matrix.wrong(name, "a non-empty list of values")


def _scale_children(scale: _Fields, ctx: _Context, allowed: Collection[str] | None) -> list[tuple[str, set[str]]]:
    if not scale.entries:
        scale.problem(scale.at, "`scale` needs at least one step")
    children: list[tuple[str, set[str]]] = []
    for child in scale.entries:
        ctx.claim(scale.key(child), child)
        overrides = scale.sub(child)
        if overrides is not None and allowed is not None:
            overrides.only(allowed)
        children.append((child, set(overrides.entries) if overrides else set()))
    return children


def _check_required(step: _Fields, kind: str, spec: StepKind, variants: list[tuple[Node, str, set[str]]]) -> None:
    for at, owner, present in variants:
        for name in spec.required:
            if name not in present:
                step.doc.problem(at, f"{owner}: `{name}` is required for a {kind} step")


def _read_stage(step: _Fields, ctx: _Context) -> str | None:
    stage = step.string("stage")
    if stage is not None and ctx.stages and stage not in ctx.stages:
        declared = ", ".join(ctx.stages)
        step.problem(step.node("stage"), f"stage '{_clip(stage)}' is not one of the pipeline's stages ({declared})")
    return stage


def _read_fail_fast(step: _Fields, ctx: _Context) -> bool | str:
    value = step.flag("fail_fast")
    return ctx.fail_fast if value is None else value


def _read_timeout(step: _Fields, kind: str, parent: Step | None) -> float | None:
    if kind in ("pending-approval", "deploy"):
        return None  # their `timeout` is an approval wait or a rollout wait, checked with the type
    if "timeout" not in step:
        return parent.timeout if parent else None  # a parallel step's timeout reaches its steps
    value = step.values["timeout"]
    if value is None or (type(value) in (int, float) and value == 0):
        return None
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(1).strip(".") == "":
        step.wrong("timeout", "a duration such as 45m, 30s or 1.5h (0 or empty for none)")
        return None
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    return seconds or None


# --- the pipeline --------------------------------------------------------------------------------------

TOP_LEVEL_FIELDS = _words(
    "version mode stages steps hooks fail_fast strict_fail_fast success_criteria indicators services",
    "build_version",
)


def load_pipeline(text: str | bytes, file: str = "codefresh.yml") -> Pipeline:
    """Parse and validate a codefresh.yml; raise PipelineError with every problem found."""
    doc = _Doc(file)
    pipeline = None
    source = _decode(text, doc)
    root = _compose(source, doc) if source is not None else None
    if root is not None and not (isinstance(root, ScalarNode) and root.tag == _NULL):
        try:
            pipeline = _read_pipeline(root, doc)
        except _TooLarge:
            doc.problem_at(1, 1, f"the file expands to more than {_MAX_VALUES} values through its aliases")
        except RecursionError:
            doc.problem_at(1, 1, "the YAML is nested too deeply")
    elif not doc.problems:
        doc.problem_at(1, 1, "the file is empty; a pipeline needs at least `version` and `steps`")
    if pipeline is None or doc.problems:
        raise PipelineError(doc.problems)
    return pipeline


def _read_pipeline(root: Node, doc: _Doc) -> Pipeline | None:
    values = doc.plain(root)
    if not isinstance(root, MappingNode) or not isinstance(values, dict):
        doc.problem(root, f"the file must be a mapping with `version` and `steps`, not {_describe(values)}")
        return None
    top = _Fields(doc, root, doc.entries(root), values)
    top.only(TOP_LEVEL_FIELDS, " at the top level")
    version = _read_version(top)
    mode = top.choice("mode", _MODES) or "sequential"
    stages = top.strings("stages") or []
    fail_fast = top.flag("fail_fast")
    strict_fail_fast = top.flag("strict_fail_fast")
    top.choice("build_version", ("v1", "v2"))
    hooks = top.sub("hooks")
    if hooks:
        _check_hooks(hooks)
    if criteria := top.sub("success_criteria"):
        _check_success_criteria(criteria)
    services = top.sub("services")
    ctx = _Context(doc, stages, mode, True if fail_fast is None else fail_fast)
    return Pipeline(
        version=version,
        steps=_read_steps(top, ctx),
        mode=mode,
        stages=stages,
        fail_fast=ctx.fail_fast,
        strict_fail_fast=strict_fail_fast,
        hooks=hooks.values if hooks else {},
        file=doc.file,
        success_criteria=criteria.values if criteria else None,
        services=services.values if services else {},
    )


def _read_version(top: _Fields) -> str:
    if "version" not in top:
        top.problem(top.at, "`version` is required (version: '1.0')")
        return "1.0"
    value = top.values["version"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value in ("1.0", "1") or (number and value == 1):
        return "1.0"
    top.wrong("version", "'1.0'")
    return "1.0"


def summary(p: Pipeline) -> str:
    """One line about a pipeline, such as `4 steps (3 top-level), 2 stages, mode sequential`."""
    every, stages = len(p.all_steps()), len(p.stages)
    return (
        f"{every} step{'s' * (every != 1)} ({len(p.steps)} top-level), "
        f"{stages} stage{'s' * (stages != 1)}, mode {p.mode}"
    )
