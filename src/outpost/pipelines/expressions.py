"""The expression language of `when.condition`: tokens, a recursive-descent parser and an evaluator, no `eval`.

It behaves as Codefresh's public evaluator (tevale) does: strict types (`1 == "1"` and `"a" + 1` are errors,
`&&` and `||` take booleans and evaluate both sides), errors instead of JavaScript's silent coercions, and a
result that counts by its truthiness ("" 0 null false are false; an object is an error). `check` turns every
error into false with an explanation, as Codefresh does. `${{VAR}}` references are replaced by the caller
before parsing; one left in the text is reported as an undefined variable.

Where JavaScript and Python differ we chose, and say so here:
- numbers are floats, shown as JavaScript shows them (`String(40)` is "40", `String(0.5)` is "0.5");
- `replace(s, find, repl)` replaces the first occurrence only, as tevale's code does (its README says
  "all", but its example contradicts its code); `repl` is taken literally (no `$&` patterns);
- string escapes are those of tevale's parser: \\n \\r \\t \\b \\f \\v, any other escaped character is itself;
- `match` and `/regex/` use Python's `re`, which agrees with JavaScript on the common syntax;
- strings are measured and compared by Unicode code points (JavaScript counts UTF-16 units; the two
  differ only for characters outside the Basic Multilingual Plane, such as emoji).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from outpost.errors import OutpostError

MAX_LENGTH = 12_000  # characters in one expression, as Codefresh allows
MAX_NESTING = 32  # parentheses and function calls inside each other; bounds Python's recursion


class _Missing(Enum):
    MISSING = "MISSING"


MISSING = _Missing.MISSING  # what a lookup returns for a name it does not know (raising KeyError works too)
Lookup = Callable[[str], object]


class ConditionError(OutpostError):
    """An expression that cannot be parsed or evaluated; `column` is 1-based, None when it has no place."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} at column {column}" if column is not None else message)


# --- tokens --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", ",", ".")
# Recognised only to say why they are refused; longest first so `===` is not read as `==` then `=`.
_UNSUPPORTED = {
    "===": "=== is not supported (use ==)",
    "!==": "!== is not supported (use !=)",
    "**": "** is not supported",
    "<<": "<< is not supported",
    ">>": ">> is not supported",
    "=": "= is not an operator (use == to compare)",
    "&": "& is not supported (use && with booleans)",
    "|": "| is not supported (use || with booleans)",
    "^": "^ is not supported",
    "~": "~ is not supported",
    "?": "the ?: operator is not supported",
    ":": "the ?: operator is not supported",
    "[": "arrays and [ ] are not supported",
    "]": "arrays and [ ] are not supported",
}
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v"}
_SPACE = " \t\n\r"
_DIGITS = frozenset("0123456789")  # not str.isdigit(), which takes "²" and "٣" too


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "op" or "end"
    value: Any
    column: int

    def shown(self) -> str:
        if self.kind == "end":
            return "the end of the condition"
        if self.kind in ("string", "number"):
            return shown(self.value)
        return f"'{self.value}'" if self.kind == "op" else str(self.value)


def _is_name_start(ch: str) -> bool:
    return ch.isalpha() or ch in "_$"


def _is_name_part(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, end = 0, len(text)
    while pos < end:
        ch, column = text[pos], pos + 1
        if ch in _SPACE:
            pos += 1
        elif text.startswith("${{", pos):
            close = text.find("}}", pos)
            shown = text[pos : close + 2] if close != -1 else text[pos:]
            raise ConditionError(f"{_clip(shown)} is not a defined variable", column)
        elif ch in _DIGITS or (ch == "." and text[pos + 1 : pos + 2] in _DIGITS):
            match = _NUMBER.match(text, pos)
            assert match is not None  # the text starts with a digit or .digit
            pos = match.end()
            if pos < end and _is_name_start(text[pos]):
                raise ConditionError("a name cannot start with a digit", column)
            value = float(match.group())
            if math.isinf(value):
                raise ConditionError(f"the number {_clip(match.group())} is too large", column)
            tokens.append(_Token("number", value, column))
        elif ch in "'\"":
            string, pos = _read_string(text, pos)
            tokens.append(_Token("string", string, column))
        elif _is_name_start(ch):
            start = pos
            while pos < end and _is_name_part(text[pos]):
                pos += 1
            tokens.append(_Token("name", text[start:pos], column))
        else:
            for refused, why in _UNSUPPORTED.items():
                if text.startswith(refused, pos) and not any(
                    op.startswith(refused) and text.startswith(op, pos) for op in _OPERATORS if len(op) > len(refused)
                ):
                    raise ConditionError(why, column)
            op = next((op for op in _OPERATORS if text.startswith(op, pos)), None)
            if op is None:
                raise ConditionError(f"unexpected character {ch!r}", column)
            tokens.append(_Token("op", op, column))
            pos += len(op)
    tokens.append(_Token("end", None, end + 1))
    return tokens


def _read_string(text: str, pos: int) -> tuple[str, int]:
    """The string literal opening at `pos`, and the position after its closing quote."""
    quote, start = text[pos], pos
    pos += 1
    chars: list[str] = []
    while pos < len(text):
        ch = text[pos]
        if ch == quote:
            return "".join(chars), pos + 1
        if ch == "\\" and pos + 1 < len(text):
            pos += 1
            chars.append(_ESCAPES.get(text[pos], text[pos]))
        else:
            chars.append(ch)
        pos += 1
    raise ConditionError(f"the string opened with {quote} is not closed", start + 1)


# --- the parsed form -----------------------------------------------------------------------------------


class Expr:
    """A parsed expression; `evaluate` gives its value or raises ConditionError."""

    column: int

    def evaluate(self, lookup: Lookup) -> object:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    value: object
    column: int

    def evaluate(self, lookup: Lookup) -> object:
        return self.value


@dataclass(frozen=True, slots=True)
class Name(Expr):
    """An identifier, dots included: `workflow.result`, `steps.build.result`."""

    parts: tuple[str, ...]
    column: int

    def evaluate(self, lookup: Lookup) -> object:
        return resolve(".".join(self.parts), lookup, self.column)


@dataclass(frozen=True, slots=True)
class Member(Expr):
    """`.key` after something that is not a plain name, such as a call: `Variable("a-b").c`."""

    target: Expr
    key: str
    column: int

    def evaluate(self, lookup: Lookup) -> object:
        return _member(self.target.evaluate(lookup), self.key, self.column)


@dataclass(frozen=True, slots=True)
class Call(Expr):
    function: str
    arguments: tuple[Expr, ...]
    column: int

    def evaluate(self, lookup: Lookup) -> object:
        return _call(self.function, [a.evaluate(lookup) for a in self.arguments], lookup, self.column)


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    """Prefix operators, innermost last: `!-x` is (("!", 1), ("-", 2)) on x. A tuple, not nesting, so a
    long run of `!` costs no recursion."""

    operators: tuple[tuple[str, int], ...]
    operand: Expr
    column: int

    def evaluate(self, lookup: Lookup) -> object:
        value = self.operand.evaluate(lookup)
        for op, column in reversed(self.operators):
            value = _unary(op, value, column)
        return value


@dataclass(frozen=True, slots=True)
class Chain(Expr):
    """Operators of one precedence, left to right: `a - b + c`. Flat, so `1+1+...+1` costs no recursion."""

    first: Expr
    rest: tuple[tuple[str, int, Expr], ...]
    column: int

    def evaluate(self, lookup: Lookup) -> object:
        value = self.first.evaluate(lookup)
        for op, column, operand in self.rest:
            value = _binary(op, value, operand.evaluate(lookup), column)
        return value


# --- parsing -------------------------------------------------------------------------------------------

# Lowest precedence first, as in JavaScript.
_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"||"}),
    frozenset({"&&"}),
    frozenset({"==", "!="}),
    frozenset({"<", ">", "<=", ">="}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%"}),
)
_KEYWORDS: dict[str, object] = {"true": True, "false": False, "null": None}


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def is_op(self, *ops: str) -> bool:
        return self.token.kind == "op" and self.token.value in ops

    def expect(self, op: str, opened: _Token) -> None:
        if not self.is_op(op):
            raise ConditionError(
                f"expected '{op}' to close the '{opened.value}' at column {opened.column}, found {self.token.shown()}",
                self.token.column,
            )
        self.take()

    def expression(self, level: int = 0) -> Expr:
        if level == len(_LEVELS):
            return self.unary()
        first = self.expression(level + 1)
        rest: list[tuple[str, int, Expr]] = []
        while self.token.kind == "op" and self.token.value in _LEVELS[level]:
            op = self.take()
            rest.append((op.value, op.column, self.expression(level + 1)))
        return Chain(first, tuple(rest), first.column) if rest else first

    def unary(self) -> Expr:
        operators: list[tuple[str, int]] = []
        while self.is_op("!", "-", "+"):
            op = self.take()
            operators.append((op.value, op.column))
        operand = self.postfix()
        return Unary(tuple(operators), operand, operators[0][1]) if operators else operand

    def postfix(self) -> Expr:
        node = self.primary()
        while self.is_op("."):
            self.take()
            key = self.take()
            if key.kind != "name":
                raise ConditionError(f"expected a name after '.', found {key.shown()}", key.column)
            if isinstance(node, Name):
                node = Name((*node.parts, key.value), node.column)
            else:
                node = Member(node, key.value, key.column)
        if self.is_op("("):
            raise ConditionError("only a function name can be called", self.token.column)
        return node

    def primary(self) -> Expr:
        token = self.take()
        if token.kind in ("number", "string"):
            return Literal(token.value, token.column)
        if token.kind == "name":
            if token.value in _KEYWORDS:
                return Literal(_KEYWORDS[token.value], token.column)
            if self.is_op("("):
                return self.call(token)
            return Name((token.value,), token.column)
        if token.kind == "op" and token.value == "(":
            self.enter(token)
            inner = self.expression()
            self.expect(")", token)
            self.depth -= 1
            return inner
        raise ConditionError(f"expected a value, found {token.shown()}", token.column)

    def call(self, name: _Token) -> Expr:
        opened = self.take()
        self.enter(opened)
        arguments: list[Expr] = []
        if not self.is_op(")"):
            arguments.append(self.expression())
            while self.is_op(","):
                self.take()
                arguments.append(self.expression())
        self.expect(")", opened)
        self.depth -= 1
        return Call(name.value, tuple(arguments), name.column)

    def enter(self, opened: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ConditionError(f"the condition nests more than {MAX_NESTING} levels deep", opened.column)


def parse(text: str) -> Expr:
    """The expression in `text`; ConditionError (with its column) if it is not one."""
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"the condition is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ConditionError("the condition is empty")
    parser = _Parser(_tokenize(text))
    expr = parser.expression()
    if parser.token.kind != "end":
        raise ConditionError(f"expected an operator or the end, found {parser.token.shown()}", parser.token.column)
    return expr


def evaluate_expression(text: str, lookup: Lookup) -> object:
    """The value of the expression: a str, float, bool, None or an object (a mapping or list) from `lookup`.

    `lookup(name)` gives the value of an identifier such as `workflow.result`, or returns MISSING (or raises
    KeyError) when there is none; see `resolve`. Raises ConditionError.
    """
    return parse(text).evaluate(lookup)


def check(text: str, lookup: Lookup) -> tuple[bool, str | None]:
    """Whether the condition holds, as Codefresh decides: by the truthiness of the value. Never raises.

    Returns (False, why) when it cannot be parsed or evaluated, (value is truthy, None) otherwise. A value
    that is an object is an error, as in tevale.
    """
    try:
        value = evaluate_expression(text, lookup)
        if isinstance(value, Mapping | list | tuple):
            raise ConditionError("an object cannot be a condition; compare one of its members")
        return truthy(value), None
    except ConditionError as error:
        return False, str(error)
    except Exception as error:  # a bug here or in `lookup` must not stop a build; say what happened
        return False, f"internal error ({type(error).__name__}: {error})"


# --- values --------------------------------------------------------------------------------------------


def truthy(value: object) -> bool:
    """JavaScript truthiness for our values: "" 0 null false are false, the rest true."""
    return value is not None and value is not False and value != 0 and value != ""


def kind(value: object) -> str:
    """The type of a value as messages name it: "a string", "a number", "a boolean", "null", "an object"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number"
    return "a string" if isinstance(value, str) else "an object"


def number_text(value: float) -> str:
    """The number as JavaScript's String() writes it: 40, 0.5, 1e+21, 1e-7."""
    if value == 0:
        return "0"
    if 1e-6 <= abs(value) < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exponent = repr(value).partition("e")
    mantissa = mantissa.removesuffix(".0")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _quoted(text: str) -> str:
    return '"' + _clip(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object) -> str:
    """A value as messages quote it: "abc", 12, true, null, an object."""
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else "an object"


def _plain(value: object, name: str, column: int) -> object:
    """A value from `lookup` in the language's types: ints become floats; other types are refused."""
    if value is None or isinstance(value, bool | str | Mapping | list | tuple):
        return value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConditionError(f"{name} is not a usable number", column)
        return number
    raise ConditionError(f"{name} has a value of an unsupported type", column)


def resolve(name: str, lookup: Lookup, column: int) -> object:
    """The value of a dotted name: `lookup` is asked for the whole name, then for ever shorter prefixes;
    the first it knows is walked by the rest of the name when it is an object (a mapping)."""
    parts = name.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        try:
            value = lookup(prefix)
        except KeyError:
            continue
        if value is MISSING:
            continue
        value = _plain(value, prefix, column)
        for part in parts[size:]:
            value = _plain(_member(value, part, column, prefix), f"{prefix}.{part}", column)
            prefix = f"{prefix}.{part}"
        return value
    raise ConditionError(f"unknown identifier {_clip(name)}", column)


def _member(value: object, key: str, column: int, owner: str = "") -> object:
    owner = owner or shown(value)
    if not isinstance(value, Mapping):
        raise ConditionError(f"{_clip(owner)} is {kind(value)}, not an object with member '{_clip(key)}'", column)
    if key not in value:
        raise ConditionError(f"{_clip(owner)} has no member '{_clip(key)}'", column)
    return _plain(value[key], key, column)


# --- operators -----------------------------------------------------------------------------------------


def _unary(op: str, value: object, column: int) -> object:
    if op == "!":
        if not isinstance(value, bool | float):
            raise ConditionError(f"! needs a boolean or a number, not {kind(value)}", column)
        return not truthy(value)
    if not isinstance(value, float):
        raise ConditionError(f"unary {op} needs a number, not {kind(value)}", column)
    return -value if op == "-" else value


def _binary(op: str, left: object, right: object, column: int) -> object:
    kinds = (kind(left), kind(right))
    if op in ("&&", "||"):
        if kinds != ("a boolean", "a boolean"):
            raise ConditionError(f"{op} needs two booleans, not {kinds[0]} and {kinds[1]}", column)
        return (left and right) if op == "&&" else (left or right)
    if op in ("==", "!="):
        if kinds[0] != kinds[1] or kinds[0] not in ("a string", "a number", "a boolean"):
            raise ConditionError(
                f"{op} compares two strings, numbers or booleans, not {kinds[0]} and {kinds[1]}", column
            )
        return (left == right) if op == "==" else (left != right)
    if isinstance(left, float) and isinstance(right, float):
        return _arithmetic(op, left, right, column)
    if isinstance(left, str) and isinstance(right, str) and op in ("+", "<", ">", "<=", ">="):
        return left + right if op == "+" else _compare(op, left, right)
    wanted = "two numbers or two strings" if op in ("+", "<", ">", "<=", ">=") else "two numbers"
    raise ConditionError(f"{op} needs {wanted}, not {kinds[0]} and {kinds[1]}", column)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    return bool(left <= right) if op == "<=" else bool(left >= right)


def _arithmetic(op: str, left: float, right: float, column: int) -> object:
    if op in ("<", ">", "<=", ">="):
        return _compare(op, left, right)
    if op in ("/", "%") and right == 0:
        raise ConditionError(f"{'division' if op == '/' else 'modulo'} of {number_text(left)} by 0", column)
    if op == "+":
        result = left + right
    elif op == "-":
        result = left - right
    elif op == "*":
        result = left * right
    elif op == "/":
        result = left / right
    else:
        result = math.fmod(left, right)  # JavaScript's %: the sign of the dividend
    if not math.isfinite(result):
        raise ConditionError(f"the result of {op} is too large", column)
    return result


# --- functions -----------------------------------------------------------------------------------------

_S, _N, _B, _O = "a string", "a number", "a boolean", "an object"
# JavaScript's whitespace for trim() and Number(); Python's str.strip() differs (it takes \x1c-\x1f, not \ufeff).
_JS_SPACE = " \t\n\v\f\r\u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(map(chr, range(0x2000, 0x200B)))
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_RADIX = re.compile(r"0([xXoObB])([0-9a-fA-F]+)")
_BASES = {"x": 16, "o": 8, "b": 2}


def _to_number(value: Any, column: int) -> float:
    """Number(x) for a string or number: as JavaScript reads it, but an error instead of NaN or Infinity."""
    if isinstance(value, float):
        return value
    text = value.strip(_JS_SPACE)
    number = math.nan
    if not text:
        number = 0.0
    elif _DECIMAL.fullmatch(text):
        number = float(text)
    elif radix := _RADIX.fullmatch(text):
        try:
            number = float(int(radix.group(2), _BASES[radix.group(1).lower()]))
        except (ValueError, OverflowError):
            number = math.nan
    if not math.isfinite(number):
        raise ConditionError(f"Number() cannot convert {shown(value)} to a number", column)
    return number


def _round(value: float) -> float:
    lower = math.floor(value)  # JavaScript's Math.round: halves go up, so round(-2.5) is -2
    return float(lower + 1 if value - lower >= 0.5 else lower)


def _substring(text: str, start: float, end: float) -> str:
    # As tevale: an end before the start means "to the end"; then JavaScript's substring clamps to the text.
    def index(value: float) -> int:
        return int(min(max(value, 0), len(text)))

    return text[index(start) :] if end < start else text[index(start) : index(end)]


def _match(text: str, pattern: str, ignore_case: bool, column: int) -> bool:
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except (re.error, RecursionError, OverflowError, ValueError) as error:
        raise ConditionError(f"match(): {shown(pattern)} is not a valid regular expression ({error})", column) from None
    return compiled.search(text) is not None


def _member_path(target: Mapping[str, Any], key: str, column: int) -> object:
    """Member(obj, key): the key itself if the object has it, else the key read as a dotted path (as lodash)."""
    if key in target:
        return _plain(target[key], key, column)
    value: object = target
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ConditionError(f"Member(): the object has no member {shown(key)}", column)
        value = value[part]
    return _plain(value, key, column)


_FUNCTIONS: dict[str, tuple[tuple[frozenset[str], ...], Callable[..., object]]] = {
    "String": ((frozenset({_N, _S}),), lambda x: number_text(x) if isinstance(x, float) else x),
    "Number": ((frozenset({_N, _S}),), _to_number),
    "Boolean": ((frozenset({_N, _S}),), truthy),
    "round": ((frozenset({_N}),), _round),
    "floor": ((frozenset({_N}),), lambda n: float(math.floor(n))),
    "upper": ((frozenset({_S}),), str.upper),
    "lower": ((frozenset({_S}),), str.lower),
    "trim": ((frozenset({_S}),), lambda s: s.strip(_JS_SPACE)),
    "trimLeft": ((frozenset({_S}),), lambda s: s.lstrip(_JS_SPACE)),
    "trimRight": ((frozenset({_S}),), lambda s: s.rstrip(_JS_SPACE)),
    "replace": ((frozenset({_S}),) * 3, lambda s, find, repl: s.replace(find, repl, 1)),
    "substring": ((frozenset({_S}), frozenset({_N}), frozenset({_N})), _substring),
    "length": ((frozenset({_S}),), lambda s: float(len(s))),
    "includes": ((frozenset({_S}),) * 2, lambda s, sub: sub in s),
    "indexOf": ((frozenset({_S}),) * 2, lambda s, sub: float(s.find(sub))),
    "match": ((frozenset({_S}), frozenset({_S}), frozenset({_B})), _match),
    "Variable": ((frozenset({_S}),), resolve),  # called with the lookup, in _call
    "Member": ((frozenset({_O}), frozenset({_S})), _member_path),
}
# These also take the column (for their own errors); Variable takes the lookup too.
_WITH_COLUMN = frozenset({"Number", "match", "Member"})
FUNCTIONS = frozenset(_FUNCTIONS)


def _call(name: str, arguments: list[object], lookup: Lookup, column: int) -> object:
    if name not in _FUNCTIONS:
        raise ConditionError(f"unknown function {_clip(name)}()", column)
    params, function = _FUNCTIONS[name]
    if len(arguments) != len(params):
        plural = "" if len(params) == 1 else "s"
        raise ConditionError(f"{name}() takes {len(params)} argument{plural}, not {len(arguments)}", column)
    for number, (argument, allowed) in enumerate(zip(arguments, params, strict=True), start=1):
        if kind(argument) not in allowed:
            expected = " or ".join(sorted(allowed))
            raise ConditionError(f"argument {number} of {name}() must be {expected}, not {kind(argument)}", column)
    if name == "Variable":
        return resolve(str(arguments[0]), lookup, column)
    return function(*arguments, column) if name in _WITH_COLUMN else function(*arguments)
