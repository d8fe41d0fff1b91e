"""YAML with locations: codefresh.yml text composed into PyYAML nodes, and plain values built from them.

The text is composed into PyYAML's node graph rather than loaded, so every key and value keeps its line and
column for problem messages. This module knows YAML only: the core schema Codefresh reads with, `<<` merge
keys, alias loops and alias bombs, and turning syntax and encoding errors into located `Problem`s. What a
pipeline may contain is checked elsewhere (`fields`, `parsing`), walking these nodes next to their values.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from outpost.errors import Problem

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
TOO_DEEP = "the YAML is nested too deeply"  # the problem when nesting exhausts Python's recursion limit


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


class TooLarge(Exception):
    """Aliases expand the file past `_MAX_VALUES`; stop converting at once. The message is the problem to report."""

    def __init__(self) -> None:
        super().__init__(f"the file expands to more than {_MAX_VALUES} values through its aliases")


Entries = dict[str, tuple[Node, Node]]  # key name -> (key node, value node), in file order


class Document:
    """One file being read: collects problems and turns nodes into plain values."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._problems: dict[Problem, None] = {}  # ordered, and drops repeats from nodes seen twice
        self._warnings: dict[Problem, None] = {}  # tolerated, but probably not what the author meant
        self._budget = _MAX_VALUES
        self._open: set[int] = set()  # collections being converted or merged, to catch alias loops

    @property
    def problems(self) -> list[Problem]:
        return list(self._problems)

    def problem(self, node: Node, message: str) -> None:
        self.problem_at(node.start_mark.line + 1, node.start_mark.column + 1, message)

    def problem_at(self, line: int, column: int, message: str) -> None:
        self._problems[Problem(self.file, line, column, message)] = None

    @property
    def warnings(self) -> list[Problem]:
        return sorted(self._warnings, key=lambda w: (w.line, w.column))

    def warn(self, node: Node, message: str) -> None:
        self._warnings[Problem(self.file, node.start_mark.line + 1, node.start_mark.column + 1, message)] = None

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
        """The node as plain Python values (dict, list, str, int, float, bool, None).

        Raises `TooLarge` once aliases have expanded the file past `_MAX_VALUES` values.
        """
        self._budget -= 1
        if self._budget < 0:
            raise TooLarge
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
            self.problem(node, f"'{clip(text)}' is not a valid {_show_tag(node.tag)} value")
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


def clip(text: str, limit: int = 40) -> str:
    """The text, cut short with an ellipsis if it is too long to quote in a problem message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_null(node: Node) -> bool:
    """Whether the node is an empty or `null` scalar."""
    return isinstance(node, ScalarNode) and node.tag == _NULL


def compose(data: str | bytes, doc: Document) -> Node | None:
    """The root node of the file's one YAML document; None, with the problem recorded in `doc`, if unreadable.

    An empty file composes to None too, without a problem: whether that is acceptable is the caller's call.
    """
    text = _decode(data, doc)
    return _compose(text, doc) if text is not None else None


def _compose(text: str, doc: Document) -> Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        _yaml_problem(exc, doc)
    except yaml.reader.ReaderError as exc:
        _reader_problem(exc, text, doc)
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error we know carries a mark
        doc.problem_at(1, 1, f"invalid YAML: {exc}")
    except RecursionError:
        doc.problem_at(1, 1, TOO_DEEP)
    return None


def _yaml_problem(exc: yaml.MarkedYAMLError, doc: Document) -> None:
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


def _reader_problem(exc: yaml.reader.ReaderError, text: str, doc: Document) -> None:
    line = text.count("\n", 0, exc.position) + 1
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, decoded with errors="surrogateescape"
        doc.problem_at(line, column, f"the file is not valid UTF-8 (byte 0x{code - 0xDC00:02x})")
    else:
        doc.problem_at(line, column, f"the file holds a character YAML does not allow (U+{code:04X})")


def _decode(data: str | bytes, doc: Document) -> str | None:
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
