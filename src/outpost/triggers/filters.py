"""Whether a trigger's rules accept a GitEvent, and when not, which rule refused it and why.

`decide` checks, in this order: disabled, provider and repository, event subscription, skip markers in
the commit message, branch regex, pull request target regex, comment regex, fork pull requests, and
last the modified-files glob, so that an event which needs its changed files looked up (see
`Decision.needs_changed_files`) has passed every other rule: once the server has the file list it puts
it in `event.changed_files` and calls `decide` again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from outpost.errors import OutpostError
from outpost.triggers.event import Decision, GitEvent, TriggerRules
from outpost.triggers.providers import find_skip_marker

MAX_GLOB_ALTERNATIVES = 256  # `{a,b}{c,d}...` multiplies; a trigger has no use for thousands of patterns

_JS_LITERAL = re.compile(r"/(.*)/([A-Za-z]*)", re.DOTALL)
_JS_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "g": 0, "u": 0, "y": 0}
_JS_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")  # JS `(?<name>...)`, not the lookbehinds `(?<=` `(?<!`
_JS_NAMED_BACKREF = re.compile(r"\\k<([A-Za-z_]\w*)>")


class RuleError(OutpostError):
    """A trigger rule (a regex or a glob) cannot be used; the message says what is wrong with it."""


def parse_regex(text: str) -> re.Pattern[str]:
    """Compile a trigger regex: JS-style `/re/flags` (flags i, m, s; g, u and y are ignored) or a plain regex.

    Matching is a search, as JavaScript's `test`: anchor with `^...$` to match a whole name. JS named
    groups `(?<n>...)` and `\\k<n>` are accepted. Raises RuleError with the reason for a bad regex.
    """
    return _parse_regex(text)


@lru_cache(maxsize=512)
def _parse_regex(text: str) -> re.Pattern[str]:
    literal = _JS_LITERAL.fullmatch(text)
    if literal:
        source, flag_letters = literal.groups()
    elif text.startswith("/"):
        raise RuleError(f"regex {text!r} starts with '/' but does not end with '/' and flags")
    else:
        source, flag_letters = text, ""
    flags = 0
    for letter in flag_letters:
        if letter not in _JS_FLAGS:
            raise RuleError(f"regex {text!r} has unknown flag '{letter}' (use i, m, s, g, u or y)")
        flags |= _JS_FLAGS[letter]
    source = _JS_NAMED_BACKREF.sub(r"(?P=\1)", _JS_NAMED_GROUP.sub("(?P<", source))
    try:
        return re.compile(source, flags)
    except re.error as problem:
        raise RuleError(f"invalid regex {text!r}: {problem}") from None


@dataclass(frozen=True)
class Glob:
    """A compiled modified-files glob; `selects(path)` says whether one changed file counts.

    The text is one pattern (paths relative to the repository root, a leading `/` or `./` ignored)
    whose `{a/**,b/*}` groups expand to alternatives (groups may nest or sit inside a path:
    `src/{api,web}/**`). `**` as a whole path segment crosses directories (`a/**` is everything under
    a/, `**/*.md` every .md file), `*` matches within one segment, `?` one character, `[abc]`/`[!abc]`
    one character of (or not of) a set; dot files are matched like any other file.

    Negation: an alternative starting with `!` excludes, and a `!` before the whole text makes every
    alternative exclude. A changed file counts when it matches some positive alternative (or there
    are none: `!docs/**` alone means "any file outside docs/") and no excluding one. The trigger
    builds when at least one changed file counts: `{src/**,!src/**/*.md}` builds for a change under
    src/ that is not only Markdown files.
    """

    text: str
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    def selects(self, path: str) -> bool:
        path = _relative(path)
        if self.include and not any(pattern.fullmatch(path) for pattern in self.include):
            return False
        return not any(pattern.fullmatch(path) for pattern in self.exclude)


def check_glob(text: str) -> None:
    """Raise RuleError when `text` is not a usable modified-files glob (the server validates triggers with it)."""
    compile_glob(text)


@lru_cache(maxsize=512)
def compile_glob(text: str) -> Glob:
    """The Glob for `text` (see Glob for the syntax); RuleError when it cannot be used."""
    stripped = text.strip()
    negate_all = stripped.startswith("!")
    alternatives = _expand_braces(stripped[1:] if negate_all else stripped, text)
    include: list[re.Pattern[str]] = []
    exclude: list[re.Pattern[str]] = []
    for alternative in alternatives:
        negated = negate_all or alternative.startswith("!")
        pattern = _relative(alternative.removeprefix("!").strip())
        if not pattern:
            raise RuleError(f"glob {text!r} has an empty pattern")
        (exclude if negated else include).append(_glob_regex(pattern))
    return Glob(text=text, include=tuple(include), exclude=tuple(exclude))


def _relative(path: str) -> str:
    return path.removeprefix("./").lstrip("/")


def _expand_braces(pattern: str, text: str) -> list[str]:
    """Every alternative of the first top-level `{...}` group, expanded again; no group: the pattern itself."""
    depth, start = 0, 0
    for index, char in enumerate(pattern):
        if char == "{":
            depth, start = depth + 1, index if depth == 0 else start
        elif char == "}":
            if depth == 0:
                raise RuleError(f"glob {text!r} has a '}}' without its '{{'")
            depth -= 1
            if depth == 0:
                head, tail = pattern[:start], pattern[index + 1 :]
                expanded = [
                    result
                    for choice in _split_top_level(pattern[start + 1 : index])
                    for result in _expand_braces(head + choice + tail, text)
                ]
                if len(expanded) > MAX_GLOB_ALTERNATIVES:
                    raise RuleError(f"glob {text!r} expands to more than {MAX_GLOB_ALTERNATIVES} patterns")
                return expanded
    if depth:
        raise RuleError(f"glob {text!r} has a '{{' without its '}}'")
    return [pattern]


def _split_top_level(group: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in group:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    return [*parts, current]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            end = index
            while end < len(pattern) and pattern[end] == "*":
                end += 1
            whole_segment = (index == 0 or pattern[index - 1] == "/") and (end == len(pattern) or pattern[end] == "/")
            if end - index >= 2 and whole_segment:
                if end == len(pattern):
                    out.append(".*")
                else:
                    out.append("(?:[^/]*/)*")  # `**/`: zero or more directories
                    end += 1
            else:
                out.append("[^/]*")
            index = end
            continue
        if char == "?":
            out.append("[^/]")
        elif char == "[" and (close := pattern.find("]", index + 2)) != -1:
            members = pattern[index + 1 : close]
            negated = members[0] in "!^"
            members = "".join("\\" + c if c in "\\^[]" else c for c in (members[1:] if negated else members))
            out.append(f"[^/{members}]" if negated else f"[{members}]")
            index = close
        else:
            out.append(re.escape(char))
        index += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as problem:  # a bad range such as `[z-a]`
        raise RuleError(f"glob pattern {pattern!r} is invalid: {problem.msg}") from None


def event_matches(subscription: str, event: str) -> bool:
    """Whether a trigger subscribed to `subscription` takes events named `event`.

    Names match exactly, and a family name takes the whole family: `push` (or `push.*`) every `push.*`,
    `pullrequest` every `pullrequest.*`, `release` every `release.*`. Two aliases follow the parsers:
    `push.heads` also takes `push.newBranch` (a new branch is a push of commits to a branch, so a
    trigger on pushes builds its first push), and `pullrequest.closed` takes `pullrequest.merged` and
    `pullrequest.unmerged-closed` (the parsers name a closed pull request by whether it was merged).
    """
    if subscription == event:
        return True
    family, _, member = event.partition(".")
    if member and subscription in (family, f"{family}.*"):
        return True
    if subscription == "push.heads":
        return event == "push.newBranch"
    if subscription == "pullrequest.closed":
        return event in ("pullrequest.merged", "pullrequest.unmerged-closed")
    return False


def decide(rules: TriggerRules, event: GitEvent) -> Decision:
    """Whether `rules` build `event`; a refusal names the rule and says why in words a user reads.

    For a pull request the branch regex applies to the source branch and `pr_target_regex` to the
    target branch; for a tag (and a release) the branch regex applies to the tag name. A rule that
    cannot be compiled refuses with its own reason rather than raising.
    """
    if rules.disabled:
        return _refuse("disabled", "the trigger is disabled")
    if rules.provider != event.provider:
        return _refuse("repo", f"the event comes from {event.provider}, the trigger listens to {rules.provider}")
    if rules.repo.casefold() != event.repo.casefold():
        return _refuse("repo", f"the event is for repository '{event.repo}', the trigger watches '{rules.repo}'")
    if not any(event_matches(subscription, event.event) for subscription in rules.events):
        listed = ", ".join(rules.events) or "none"
        return _refuse("event", f"event '{event.event}' is not among the trigger's events ({listed})")
    marker = find_skip_marker(event.commit_message)
    if marker:
        return _refuse("skip-marker", f"the commit message contains '{marker}'")
    return _decide_by_names(rules, event) or _decide_by_files(rules, event)


def _decide_by_names(rules: TriggerRules, event: GitEvent) -> Decision | None:
    is_pr = event.event.startswith("pullrequest.")
    if rules.branch_regex:
        what = "tag" if event.event == "push.tags" or event.event.startswith("release.") else "branch"
        refusal = _refuse_unmatched("branch", what, event.branch, rules.branch_regex)
        if refusal:
            return refusal
    if is_pr and rules.pr_target_regex:
        refusal = _refuse_unmatched("pr-target", "target branch", event.pr_target_branch, rules.pr_target_regex)
        if refusal:
            return refusal
    if event.event == "pullrequest.commentAdded" and rules.comment_regex:
        refusal = _refuse_unmatched("comment", "comment", event.pr_comment, rules.comment_regex)
        if refusal:
            return refusal
    if is_pr and event.pr_fork and not rules.allow_fork_events:
        reason = f"pull request #{event.pr_number} comes from a fork and the trigger does not allow fork events"
        return _refuse("fork", reason)
    return None


def _decide_by_files(rules: TriggerRules, event: GitEvent) -> Decision:
    if not rules.modified_files_glob:
        return Decision(build=True)
    try:
        glob = compile_glob(rules.modified_files_glob)
    except RuleError as problem:
        return _refuse("files", str(problem))
    if event.changed_files is None:
        reason = f"the payload does not list every changed file; {glob.text} must be checked against the diff"
        return Decision(build=False, rule="files", reason=reason, needs_changed_files=True)
    if any(glob.selects(path) for path in event.changed_files):
        return Decision(build=True)
    if not event.changed_files:
        return _refuse("files", f"no file changed, so none matches {glob.text}")
    shown = ", ".join(event.changed_files[:5]) + (", ..." if len(event.changed_files) > 5 else "")
    return _refuse("files", f"no changed file matches {glob.text} (changed: {shown})")


def _refuse_unmatched(rule: str, what: str, value: str | None, regex: str) -> Decision | None:
    try:
        pattern = parse_regex(regex)
    except RuleError as problem:
        return _refuse(rule, str(problem))
    shown = regex if regex.startswith("/") else f"/{regex}/"
    if value is None:
        return _refuse(rule, f"the event names no {what} to match against {shown}")
    if pattern.search(value):
        return None
    return _refuse(rule, f"{what} '{value}' does not match {shown}")


def _refuse(rule: str, reason: str) -> Decision:
    return Decision(build=False, rule=rule, reason=reason)
