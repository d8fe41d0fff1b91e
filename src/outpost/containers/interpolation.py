"""Compose's `${VAR}` interpolation: the `$` expressions in a string replaced with values from a given mapping,
never from the process environment."""

from __future__ import annotations

import re
from collections.abc import Mapping

from outpost.pipelines.fields import describe

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # as compose and the shell accept it

_OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # longest first: `:-` is not `:` then `-`


class Interpolator:
    """Compose's `$` expressions in a string: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `:?`/`?`
    (required), `:+`/`+` (alternative), `$$` (a literal `$`). With `:` an empty value counts as unset. Defaults may
    hold expressions themselves. Unset names give empty strings and are remembered in `unset` for a warning."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = variables
        self.unset: dict[str, None] = {}  # in first-use order

    def __call__(self, text: str) -> str:
        out: list[str] = []
        start = 0
        while (dollar := text.find("$", start)) != -1:
            out.append(text[start:dollar])
            start = self._expand(text, dollar, out)
        out.append(text[start:])
        return "".join(out)

    def _expand(self, text: str, dollar: int, out: list[str]) -> int:
        """Append the value of the expression at `text[dollar]` to `out`; return where the text goes on."""
        if text.startswith("$$", dollar):
            out.append("$")
            return dollar + 2
        if text.startswith("${{", dollar):  # a Codefresh reference the engine left unresolved: not ours
            end = text.find("}}", dollar)
            if end == -1:
                raise ValueError(f"unterminated `${{{{` in {describe(text)}")
            out.append(text[dollar : end + 2])
            return end + 2
        if text.startswith("${", dollar):
            end = _closing_brace(text, dollar + 2)
            out.append(self._braced(text[dollar + 2 : end], text))
            return end + 1
        if name := VARIABLE_NAME.match(text, dollar + 1):
            out.append(self._value(name.group()) or "")
            return name.end()
        raise ValueError(f"`$` must be followed by a variable name in {describe(text)}: write `$$` for a literal `$`")

    def _braced(self, inner: str, text: str) -> str:
        name = VARIABLE_NAME.match(inner)
        if name is None:
            raise ValueError(f"invalid interpolation `${{{inner}}}` in {describe(text)}")
        rest = inner[name.end() :]
        if not rest:
            return self._value(name.group()) or ""
        operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if operator is None:
            raise ValueError(f"invalid interpolation `${{{inner}}}` in {describe(text)}")
        argument = rest[len(operator) :]
        value = self.variables.get(name.group())
        present = bool(value) if operator.startswith(":") else value is not None
        if operator.endswith("-"):
            return value if present and value is not None else self(argument)
        if operator.endswith("+"):
            return self(argument) if present else ""
        if not present or value is None:  # `?`: required
            raise ValueError(f"`{name.group()}` is required" + (f": {argument}" if argument else ""))
        return value

    def _value(self, name: str) -> str | None:
        value = self.variables.get(name)
        if value is None:
            self.unset[name] = None
        return value


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` that closes a `${` whose body starts at `start`, past nested `${...}`."""
    depth = 1
    index = start
    while index < len(text):
        if text.startswith("${{", index) and (end := text.find("}}", index)) != -1:  # kept as written, see above
            index = end + 2
            continue
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unterminated `${{` in {describe(text)}")
