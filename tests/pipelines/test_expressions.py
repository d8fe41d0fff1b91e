"""The expression language: every operator and function, its errors, precedence, and garbage that never crashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outpost.pipelines.expressions import (
    MAX_LENGTH,
    MAX_NESTING,
    MISSING,
    ConditionError,
    check,
    evaluate_expression,
    number_text,
    parse,
)

VARIABLES: dict[str, object] = {
    "n": 5,
    "zero": 0,
    "s": "hello",
    "empty": "",
    "yes": True,
    "no": False,
    "nothing": None,
    "workflow.result": "success",  # a flat dotted name, as the engine gives them
    "steps": {"build": {"result": "failure", "name": "build"}},  # an object walked by the dots
    "odd-name": "dashed",
    "huge": 10**400,
    "items": [1, 2],
}


def lookup(name: str) -> object:
    return VARIABLES.get(name, MISSING)


def value(text: str) -> object:
    return evaluate_expression(text, lookup)


def error(text: str) -> str:
    with pytest.raises(ConditionError) as caught:
        value(text)
    return str(caught.value)


# --- results -------------------------------------------------------------------------------------------

RESULTS: list[tuple[str, object]] = [
    # literals
    ("'single'", "single"),
    ('"double"', "double"),
    ("42", 42.0),
    ("3.25", 3.25),
    (".5", 0.5),
    ("1e3", 1000.0),
    ("1.5E-2", 0.015),
    ("0000", 0.0),
    ("true", True),
    ("false", False),
    ("null", None),
    # escapes, as tevale's parser reads them
    (r'"a\"b"', 'a"b'),
    (r"'it\'s'", "it's"),
    (r'"tab\there"', "tab\there"),
    (r'"line\nbreak"', "line\nbreak"),
    (r'"back\\slash"', "back\\slash"),
    (r'"\q"', "q"),
    ('"it\'s"', "it's"),
    ("'say \"hi\"'", 'say "hi"'),
    # unary
    ("-5", -5.0),
    ("+5", 5.0),
    ("- -5", 5.0),
    ("!true", False),
    ("!false", True),
    ("!0", True),
    ("!7", False),
    ("!!!!!!!!!!true", True),
    # arithmetic
    ("1 + 2", 3.0),
    ("7 - 10", -3.0),
    ("6 * 7", 42.0),
    ("7 / 2", 3.5),
    ("7 % 3", 1.0),
    ("-7 % 3", -1.0),  # JavaScript's remainder keeps the sign of the dividend
    ("0.1 + 0.2 == 0.3", False),
    ('"ab" + "cd"', "abcd"),
    # comparison
    ("2 < 3", True),
    ("3 < 2", False),
    ("3 > 2", True),
    ("2 <= 2", True),
    ("3 >= 4", False),
    ('"apple" < "banana"', True),
    ('"b" > "abc"', True),
    ('"B" < "a"', True),
    ("1 == 1", True),
    ("1 != 1", False),
    ('"a" == "a"', True),
    ('"a" != "b"', True),
    ("true == true", True),
    ("true != false", True),
    # logic
    ("true && true", True),
    ("true && false", False),
    ("false || true", True),
    ("false || false", False),
    # precedence and parentheses, as in JavaScript
    ("1 + 2 * 3", 7.0),
    ("(1 + 2) * 3", 9.0),
    ("10 - 4 - 3", 3.0),
    ("2 * 3 % 4", 2.0),
    ("-2 * 3", -6.0),
    ("1 + 1 == 2", True),
    ("1 < 2 == true", True),
    ("true || false && false", True),
    ("(true || false) && false", False),
    ("!(1 == 2) && 3 > 2", True),
    ("60 > 35 && (50 > 22 && ((90 > 33) && ((26 > 10) && 15 > 30)) || (80 > 32))", True),
    ("((((((1))))))", 1.0),
    # identifiers
    ("n", 5.0),
    ("n * 2", 10.0),
    ("s", "hello"),
    ("nothing", None),
    ("workflow.result", "success"),
    ('workflow.result == "success"', True),
    ("steps.build.result", "failure"),
    ('steps.build.result != "success"', True),
    # functions
    ("String(40)", "40"),
    ("String(0.5)", "0.5"),
    ("String(-3)", "-3"),
    ('String("x")', "x"),
    ('Number("50")', 50.0),
    ('Number("  1.5 ")', 1.5),
    ('Number("")', 0.0),
    ('Number("0x1A")', 26.0),
    ('Number("-2e2")', -200.0),
    ("Number(7)", 7.0),
    ('Boolean("123")', True),
    ('Boolean("0")', True),
    ('Boolean("")', False),
    ("Boolean(583)", True),
    ("Boolean(0)", False),
    ("Boolean(Number(String(0)))", False),
    ("round(1.3)", 1.0),
    ("round(1.95)", 2.0),
    ("round(2.5)", 3.0),
    ("round(-2.5)", -2.0),
    ("floor(1.95)", 1.0),
    ("floor(-1.5)", -2.0),
    ("upper('hello')", "HELLO"),
    ("lower('BYE BYE')", "bye bye"),
    ('trim("   abc   ")', "abc"),
    ('trimLeft("   abc   ")', "abc   "),
    ('trimRight("   abc   ")', "   abc"),
    ('trim("\\t\\n abc \\n")', "abc"),
    ("replace('hello there', 'e', 'a')", "hallo there"),  # the first occurrence, as tevale's code
    ("replace('a.b', '.', '$&')", "a$&b"),  # the replacement is literal
    ('substring("hello world", 6, 11)', "world"),
    ('substring("hello", 1, 100)', "ello"),
    ('substring("hello", -3, 2)', "he"),
    ('substring("hello", 3, 1)', "lo"),  # an end before the start means "to the end", as tevale
    ('substring("hello", 20, 40)', ""),
    ('length("gump")', 4.0),
    ('length("")', 0.0),
    ('includes("codefresh", "odef")', True),
    ('includes("codefresh", "xyz")', False),
    ('indexOf("codefresh", "odef")', 1.0),
    ('indexOf("codefresh", "xyz")', -1.0),
    ('match("hello there you", "..ll.", false)', True),
    ('match("hello there you", "..LL.", false)', False),
    ('match("hello there you", "..LL.", true)', True),
    ('match("hello there you", "hell$", true)', False),
    ('match("hello there you", "^hell", true)', True),
    ('match("release/1.2", "^release/\\\\d", false)', True),
    ('Variable("n")', 5.0),
    ('Variable("odd-name")', "dashed"),
    ('Variable("steps.build.result")', "failure"),
    ('Member(steps, "build").result', "failure"),
    ('Member(Member(steps, "build"), "name")', "build"),
    ('Member(steps, "build.result")', "failure"),
    ("upper(substring(s, 0, 1)) + substring(s, 1, length(s))", "Hello"),
]


@pytest.mark.parametrize(("text", "expected"), RESULTS, ids=[case[0] for case in RESULTS])
def test_an_expression_has_the_value_javascript_would_give(text: str, expected: object) -> None:
    result = value(text)
    assert result == expected
    assert type(result) is type(expected)


# --- errors, each with its message and column ----------------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    # parsing
    ("", "the condition is empty"),
    ("   ", "the condition is empty"),
    ("1 +", "expected a value, found the end of the condition at column 4"),
    ("1 2", "expected an operator or the end, found 2 at column 3"),
    ("a b", "expected an operator or the end, found b at column 3"),
    ("(1 + 2", "expected ')' to close the '(' at column 1, found the end of the condition at column 7"),
    ("upper('a'", "expected ')' to close the '(' at column 6, found the end of the condition at column 10"),
    ("1)", "expected an operator or the end, found ')' at column 2"),
    ("'abc", "the string opened with ' is not closed at column 1"),
    ('"abc\\"', 'the string opened with " is not closed at column 1'),
    ("1 === 1", "=== is not supported (use ==) at column 3"),
    ("1 !== 1", "!== is not supported (use !=) at column 3"),
    ("n = 1", "= is not an operator (use == to compare) at column 3"),
    ("5 > 2 ? 4 : 1", "the ?: operator is not supported at column 7"),
    ("[1, 2, 3]", "arrays and [ ] are not supported at column 1"),
    ("steps['build']", "arrays and [ ] are not supported at column 6"),
    ("15 | 33", "| is not supported (use || with booleans) at column 4"),
    ("15 & 33", "& is not supported (use && with booleans) at column 4"),
    ("~234", "~ is not supported at column 1"),
    ("2 ** 3", "** is not supported at column 3"),
    ("5555 @ 33333", "unexpected character '@' at column 6"),
    ("`asdasd`", "unexpected character '`' at column 1"),
    ("1a", "a name cannot start with a digit at column 1"),
    ("steps.", "expected a name after '.', found the end of the condition at column 7"),
    ("steps..build", "expected a name after '.', found '.' at column 7"),
    ("steps.build(1)", "only a function name can be called at column 12"),
    ("123(false)", "only a function name can be called at column 4"),
    ("1e400", "the number 1e400 is too large at column 1"),
    ("${{CF_BRANCH}} == 'main'", "${{CF_BRANCH}} is not a defined variable at column 1"),
    ("x == ${{UNCLOSED", "${{UNCLOSED is not a defined variable at column 6"),
    # identifiers
    ("foo", "unknown identifier foo at column 1"),
    ("1 + foo.bar", "unknown identifier foo.bar at column 5"),
    ("steps.deploy.result", "steps has no member 'deploy' at column 1"),
    ("s.length", "s is a string, not an object with member 'length' at column 1"),
    ('"x".y', "\"x\" is a string, not an object with member 'y' at column 5"),
    ("huge", "huge is not a usable number at column 1"),
    # types
    ("1 == '1'", "== compares two strings, numbers or booleans, not a number and a string at column 3"),
    ("null == null", "== compares two strings, numbers or booleans, not null and null at column 6"),
    ("true != 1", "!= compares two strings, numbers or booleans, not a boolean and a number at column 6"),
    ("steps == steps", "== compares two strings, numbers or booleans, not an object and an object at column 7"),
    ("n > null", "> needs two numbers or two strings, not a number and null at column 3"),
    ("n < s", "< needs two numbers or two strings, not a number and a string at column 3"),
    ("false > true", "> needs two numbers or two strings, not a boolean and a boolean at column 7"),
    ("s + 5", "+ needs two numbers or two strings, not a string and a number at column 3"),
    ("555 + true", "+ needs two numbers or two strings, not a number and a boolean at column 5"),
    ("s / 5", "/ needs two numbers, not a string and a number at column 3"),
    ("s - s", "- needs two numbers, not a string and a string at column 3"),
    ("s * 2", "* needs two numbers, not a string and a number at column 3"),
    ("s % 2", "% needs two numbers, not a string and a number at column 3"),
    ("1 && true", "&& needs two booleans, not a number and a boolean at column 3"),
    ("true || 's'", "|| needs two booleans, not a boolean and a string at column 6"),
    ("true || foo", "unknown identifier foo at column 9"),  # both sides are evaluated, as in tevale
    ("!s", "! needs a boolean or a number, not a string at column 1"),
    ("-s", "unary - needs a number, not a string at column 1"),
    ("+true", "unary + needs a number, not a boolean at column 1"),
    # arithmetic
    ("n / zero", "division of 5 by 0 at column 3"),
    ("n % 0", "modulo of 5 by 0 at column 3"),
    ("0 / 0", "division of 0 by 0 at column 3"),
    ("1.79E+308 * 1.79E+308", "the result of * is too large at column 11"),
    # functions
    ("hello(false)", "unknown function hello() at column 1"),
    ("upper()", "upper() takes 1 argument, not 0 at column 1"),
    ('lower("asd", 3, 5)', "lower() takes 1 argument, not 3 at column 1"),
    ('replace("a", "b")', "replace() takes 3 arguments, not 2 at column 1"),
    ("lower(123)", "argument 1 of lower() must be a string, not a number at column 1"),
    ("trim(null)", "argument 1 of trim() must be a string, not null at column 1"),
    ("Number(false)", "argument 1 of Number() must be a number or a string, not a boolean at column 1"),
    ('round("13")', "argument 1 of round() must be a number, not a string at column 1"),
    ('substring("abc", "1", 2)', "argument 2 of substring() must be a number, not a string at column 1"),
    ('match("abc", "b", "yes")', "argument 3 of match() must be a boolean, not a string at column 1"),
    ('Member("abc", "x")', "argument 1 of Member() must be an object, not a string at column 1"),
    ("Variable(5)", "argument 1 of Variable() must be a string, not a number at column 1"),
    ('Number("hello there")', 'Number() cannot convert "hello there" to a number at column 1'),
    ('Number("Infinity")', 'Number() cannot convert "Infinity" to a number at column 1'),
    ('Variable("nope")', "unknown identifier nope at column 1"),
    ('Member(steps, "deploy")', 'Member(): the object has no member "deploy" at column 1'),
    (
        'match("abc", "(", false)',
        'match(): "(" is not a valid regular expression (missing ), unterminated subpattern at position 0) at column 1',
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[case[0] or "(empty)" for case in ERRORS])
def test_an_invalid_expression_raises_with_a_message_and_a_column(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[case[0] or "(empty)" for case in ERRORS])
def test_check_turns_every_error_into_false_with_the_reason(text: str, message: str) -> None:
    assert check(text, lookup) == (False, message)


def test_the_error_carries_its_column_apart_from_its_message() -> None:
    with pytest.raises(ConditionError) as caught:
        parse("true && (1 +)")
    assert caught.value.message == "expected a value, found ')'"
    assert caught.value.column == 13


def test_an_unsubstituted_variable_inside_quotes_is_only_text() -> None:
    assert check('"${{CF_BRANCH}}" == "main"', lookup) == (False, None)
    assert check('"main" == "main"', lookup) == (True, None)


# --- truthiness of the result --------------------------------------------------------------------------

TRUTH: list[tuple[str, bool]] = [
    ("true", True),
    ("false", False),
    ("1234", True),
    ("-1234", True),
    ("0", False),
    ("0000000", False),
    ('""', False),
    ("'asdasd'", True),
    ("null", False),
    ("nothing", False),
    ("empty", False),
    ("s", True),
    ("zero", False),
    ("upper(s)", True),
    ("substring(s, 20, 40)", False),
    ("n / n", True),
    ("123 - 123", False),
]


@pytest.mark.parametrize(("text", "expected"), TRUTH, ids=[case[0] for case in TRUTH])
def test_a_condition_holds_when_its_value_is_truthy(text: str, expected: bool) -> None:
    assert check(text, lookup) == (expected, None)


def test_an_object_is_not_a_condition() -> None:
    assert check("steps.build", lookup) == (False, "an object cannot be a condition; compare one of its members")
    assert check("items", lookup) == (False, "an object cannot be a condition; compare one of its members")


def test_a_lookup_may_raise_key_error_for_an_unknown_name() -> None:
    def strict(name: str) -> object:
        return {"CF_BRANCH": "main"}[name]

    assert check('CF_BRANCH == "main"', strict) == (True, None)
    assert check("CF_BRANCHES", strict) == (False, "unknown identifier CF_BRANCHES at column 1")


def test_check_never_raises_even_when_the_lookup_breaks() -> None:
    def broken(name: str) -> object:
        raise RuntimeError("database down")

    assert check("x", broken) == (False, "internal error (RuntimeError: database down)")


# --- limits --------------------------------------------------------------------------------------------


def test_an_expression_may_be_12000_characters_long_but_no_longer() -> None:
    longest = "1" + " " * (MAX_LENGTH - 1)
    assert check(longest, lookup) == (True, None)
    assert check(longest + " ", lookup) == (False, "the condition is longer than 12000 characters")


def test_nesting_is_bounded_by_an_error_not_a_recursion_error() -> None:
    deepest = "(" * MAX_NESTING + "1" + ")" * MAX_NESTING
    assert value(deepest) == 1.0
    assert error("(" + deepest + ")") == f"the condition nests more than {MAX_NESTING} levels deep at column 33"
    calls = "upper(" * (MAX_NESTING + 1) + "'a'" + ")" * (MAX_NESTING + 1)
    assert error(calls).startswith(f"the condition nests more than {MAX_NESTING} levels deep")
    assert check("(" * 6000, lookup)[0] is False


def test_long_flat_expressions_need_no_recursion() -> None:
    assert value("+".join(["1"] * 5000)) == 5000.0
    assert value("!" * 9999 + "false") is True
    assert value(" && ".join(["true"] * 1500)) is True


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (40.0, "40"),
        (-0.0, "0"),
        (0.5, "0.5"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123456789012345680000.0, "123456789012345680000"),
        (2.5e-10, "2.5e-10"),
        (-1e300, "-1e+300"),
    ],
)
def test_numbers_are_written_as_javascript_writes_them(number: float, text: str) -> None:
    assert number_text(number) == text


# --- garbage never escapes as anything but ConditionError ---------------------------------------------

TOKENS = [
    "1",
    "0",
    "2.5",
    ".5",
    "1e3",
    "'a'",
    '"b"',
    "'",
    '"',
    "\\",
    "true",
    "false",
    "null",
    "n",
    "s",
    "steps",
    ".",
    "build",
    "result",
    "x",
    "(",
    ")",
    ",",
    "!",
    "-",
    "+",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "&&",
    "||",
    "===",
    "?",
    ":",
    "[",
    "]",
    "${{",
    "}}",
    "upper",
    "String",
    "Number",
    "substring",
    "match",
    "Member",
    "Variable",
    "replace",
    " ",
    "\n",
    "\t",
    "é",
    "😀",
    "٣",
    "²",
]


def outcome(text: str) -> str:
    """'value', or the error's message; any other exception escapes and fails the test."""
    try:
        evaluate_expression(text, lookup)
    except ConditionError as caught:
        return caught.message
    return "value"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_condition_error(text: str) -> None:
    assert outcome(text)  # a value, or an error that says something
    ok, why = check(text, lookup)
    assert isinstance(ok, bool)
    assert why is None or not why.startswith("internal error")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_text_made_of_the_languages_own_tokens_never_raises_anything_but_condition_error(text: str) -> None:
    assert outcome(text)  # a value, or an error that says something
    ok, why = check(text, lookup)
    assert isinstance(ok, bool)
    assert why is None or not why.startswith("internal error")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_tokens_run_together_never_raise_anything_but_condition_error(text: str) -> None:
    assert outcome(text)  # a value, or an error that says something
    assert isinstance(check(text, lookup)[0], bool)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10_000, 10_000), st.integers(-10_000, 10_000))
def test_integer_arithmetic_agrees_with_python(a: int, b: int) -> None:
    assert value(f"{a} + {b}") == a + b
    assert value(f"{a} - ({b})") == a - b
    assert value(f"{a} * {b}") == a * b
    assert value(f"{a} < {b}") is (a < b)
    assert value(f"{a} == {b}") is (a == b)
    if b:
        assert value(f"{a} % {b}") == abs(a) % abs(b) * (1 if a >= 0 else -1)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_any_string_survives_quoting_and_escaping(text: str) -> None:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    assert value(f'"{escaped}"') == text
    assert value(f'length("{escaped}")') == len(text)
