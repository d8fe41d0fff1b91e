"""Trigger rules: which events a trigger builds, and the rule and reason when it does not."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from outpost.triggers.event import Decision, GitEvent, TriggerRules
from outpost.triggers.filters import RuleError, check_glob, compile_glob, decide, event_matches, parse_regex
from outpost.triggers.registry import PROVIDER_MODULES
from tests.triggers import webhook_fixture
from tests.triggers.test_providers import EXPECTED, load

PUSH = GitEvent(
    provider="github",
    event="push.heads",
    repo="acme/shop",
    branch="main",
    after="1" * 40,
    commit_message="Add the cart",
    changed_files=["src/cart.py", "README.md"],
)
PR = GitEvent(
    provider="github",
    event="pullrequest.opened",
    repo="acme/shop",
    branch="feature/cart",
    after="2" * 40,
    pr_number=12,
    pr_source_branch="feature/cart",
    pr_target_branch="main",
    changed_files=None,
)
COMMENT = replace(PR, event="pullrequest.commentAdded", pr_comment="/test all", pr_comment_author="ann")


def rules(**settings: Any) -> TriggerRules:
    base: dict[str, Any] = {"provider": "github", "repo": "acme/shop", "events": ["push", "pullrequest"]}
    return TriggerRules(**(base | settings))


def refused(rule: str, reason: str) -> Decision:
    return Decision(build=False, rule=rule, reason=reason)


BUILD = Decision(build=True)


# The rules one by one, in the order decide checks them

CASES: list[tuple[str, TriggerRules, GitEvent, Decision]] = [
    ("a plain trigger builds a push", rules(), PUSH, BUILD),
    ("a disabled trigger builds nothing", rules(disabled=True), PUSH, refused("disabled", "the trigger is disabled")),
    ("the repository compares without case", rules(repo="ACME/Shop"), PUSH, BUILD),
    (
        "another repository is refused",
        rules(repo="acme/admin"),
        PUSH,
        refused("repo", "the event is for repository 'acme/shop', the trigger watches 'acme/admin'"),
    ),
    (
        "another provider is refused",
        rules(provider="gitlab"),
        PUSH,
        refused("repo", "the event comes from github, the trigger listens to gitlab"),
    ),
    (
        "an event the trigger does not subscribe to is refused",
        rules(events=["push.tags", "pullrequest.opened"]),
        PUSH,
        refused("event", "event 'push.heads' is not among the trigger's events (push.tags, pullrequest.opened)"),
    ),
    (
        "a skip marker in the commit message is refused",
        rules(),
        replace(PUSH, commit_message="Bump version [skip ci]"),
        refused("skip-marker", "the commit message contains '[skip ci]'"),
    ),
    (
        "a skip marker in the pull request title does not count",
        rules(),
        replace(PR, pr_title="WIP [ci skip]"),
        BUILD,
    ),
    ("a branch regex that matches builds", rules(branch_regex="/^main$/"), PUSH, BUILD),
    (
        "a branch regex that does not match is refused",
        rules(branch_regex="/^main$/"),
        replace(PUSH, branch="dev"),
        refused("branch", "branch 'dev' does not match /^main$/"),
    ),
    ("the i flag ignores case", rules(branch_regex="/^MAIN$/i"), PUSH, BUILD),
    (
        "without the i flag case matters",
        rules(branch_regex="/^MAIN$/"),
        PUSH,
        refused("branch", "branch 'main' does not match /^MAIN$/"),
    ),
    ("g, u and y flags are ignored", rules(branch_regex="/^ma/guy"), PUSH, BUILD),
    ("a plain regex searches the name", rules(branch_regex="ai"), PUSH, BUILD),
    (
        "a plain regex is shown between slashes",
        rules(branch_regex="^release/"),
        PUSH,
        refused("branch", "branch 'main' does not match /^release//"),
    ),
    (
        "a tag is checked against the branch regex by its name",
        rules(branch_regex=r"/^v\d+/"),
        replace(PUSH, event="push.tags", branch="latest", tag="latest"),
        refused("branch", r"tag 'latest' does not match /^v\d+/"),
    ),
    ("a pull request's branch is its source branch", rules(branch_regex="/^feature\\//"), PR, BUILD),
    ("a pull request target regex that matches builds", rules(pr_target_regex="/^main$/"), PR, BUILD),
    (
        "a pull request target regex that does not match is refused",
        rules(pr_target_regex="/^release\\/.*/"),
        PR,
        refused("pr-target", "target branch 'main' does not match /^release\\/.*/"),
    ),
    ("the target regex does not apply to pushes", rules(pr_target_regex="/^release$/"), PUSH, BUILD),
    ("a comment regex that matches builds", rules(comment_regex="/^\\/test/"), COMMENT, BUILD),
    (
        "a comment regex that does not match is refused",
        rules(comment_regex="/^\\/deploy/"),
        COMMENT,
        refused("comment", "comment '/test all' does not match /^\\/deploy/"),
    ),
    ("the comment regex applies to comments only", rules(comment_regex="/^\\/deploy/"), PR, BUILD),
    (
        "a branch regex cannot match an event that names no branch",
        rules(branch_regex="/^main$/"),
        replace(COMMENT, branch=None),
        refused("branch", "the event names no branch to match against /^main$/"),
    ),
    (
        "a pull request from a fork is refused by default",
        rules(),
        replace(PR, pr_fork=True),
        refused("fork", "pull request #12 comes from a fork and the trigger does not allow fork events"),
    ),
    ("a pull request from a fork builds when allowed", rules(allow_fork_events=True), replace(PR, pr_fork=True), BUILD),
    ("a glob that selects a changed file builds", rules(modified_files_glob="src/**"), PUSH, BUILD),
    (
        "a glob that selects no changed file is refused",
        rules(modified_files_glob="{docs/**,*.txt}"),
        PUSH,
        refused("files", "no changed file matches {docs/**,*.txt} (changed: src/cart.py, README.md)"),
    ),
    (
        "a glob cannot select anything from a deleted branch",
        rules(modified_files_glob="src/**"),
        replace(PUSH, event="push.deleteBranch", after=None, changed_files=[]),
        refused("files", "no file changed, so none matches src/**"),
    ),
    (
        "a glob on an event without a complete file list asks for the files",
        rules(modified_files_glob="src/**"),
        PR,
        Decision(
            build=False,
            rule="files",
            reason="the payload does not list every changed file; src/** must be checked against the diff",
            needs_changed_files=True,
        ),
    ),
    (
        "a rule refused earlier wins over the missing file list",
        rules(modified_files_glob="src/**", pr_target_regex="/^release$/"),
        PR,
        refused("pr-target", "target branch 'main' does not match /^release$/"),
    ),
    (
        "an invalid stored regex refuses instead of failing",
        rules(branch_regex="/[a-/"),
        PUSH,
        refused("branch", "invalid regex '/[a-/': unterminated character set at position 0"),
    ),
    (
        "an invalid stored glob refuses instead of failing",
        rules(modified_files_glob="{src/**"),
        PUSH,
        refused("files", "glob '{src/**' has a '{' without its '}'"),
    ),
]


@pytest.mark.parametrize(("case", "trigger", "event", "decision"), CASES, ids=[case[0] for case in CASES])
def test_a_rule_decides(case: str, trigger: TriggerRules, event: GitEvent, decision: Decision) -> None:
    assert decide(trigger, event) == decision


# Event names


@pytest.mark.parametrize(
    ("subscription", "event", "matches"),
    [
        ("push", "push.heads", True),
        ("push", "push.tags", True),
        ("push", "push.newBranch", True),
        ("push", "push.deleteBranch", True),
        ("push", "pullrequest.opened", False),
        ("push.heads", "push.heads", True),
        ("push.heads", "push.newBranch", True),  # a new branch's first push builds
        ("push.heads", "push.tags", False),
        ("push.heads", "push.deleteBranch", False),
        ("push.newBranch", "push.heads", False),
        ("push.tags", "push.tags", True),
        ("pullrequest", "pullrequest.commentAdded", True),
        ("pullrequest", "push.heads", False),
        ("pullrequest.closed", "pullrequest.merged", True),
        ("pullrequest.closed", "pullrequest.unmerged-closed", True),
        ("pullrequest.merged", "pullrequest.unmerged-closed", False),
        ("pullrequest.opened", "pullrequest.reopened", False),
        ("release", "release.published", True),
        ("release.*", "release.created", True),
        ("release.published", "release.created", False),
        ("push", "ping", False),
        ("pullrequest", "ping", False),
    ],
)
def test_a_subscription_takes_its_events(subscription: str, event: str, matches: bool) -> None:
    assert event_matches(subscription, event) is matches


# Regexes


@pytest.mark.parametrize(
    ("text", "name", "matches"),
    [
        ("/^main$/", "main", True),
        ("/^main$/", "mainline", False),
        ("/^FB-.*/i", "fb-123", True),
        ("/^FB-.*/", "fb-123", False),
        ("/^a.b$/s", "a\nb", True),
        ("/^b$/m", "a\nb", True),
        ("/^b$/", "a\nb", False),
        ("/release\\/v\\d+/", "release/v12", True),
        ("^(?!wip/)", "wip/thing", False),
        ("^(?!wip/)", "feature/thing", True),
        ("/^(?<kind>feat|fix)\\/\\k<kind>-/", "fix/fix-1", True),
        ("/^(?<kind>feat|fix)\\/\\k<kind>-/", "fix/feat-1", False),
        ("//", "anything", True),
    ],
)
def test_a_regex_is_read_as_javascript_would(text: str, name: str, matches: bool) -> None:
    assert bool(parse_regex(text).search(name)) is matches


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/^main$/x", "regex '/^main$/x' has unknown flag 'x' (use i, m, s, g, u or y)"),
        ("/^main$", "regex '/^main$' starts with '/' but does not end with '/' and flags"),
        ("(unclosed", "invalid regex '(unclosed': missing ), unterminated subpattern at position 0"),
        ("/*/", "invalid regex '/*/': nothing to repeat at position 0"),
    ],
)
def test_an_invalid_regex_is_refused_with_its_reason(text: str, problem: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_regex(text)
    assert str(caught.value) == problem


# Globs


@pytest.mark.parametrize(
    ("glob", "path", "selected"),
    [
        ("src/**", "src/a.py", True),
        ("src/**", "src/deep/er/a.py", True),
        ("src/**", "srcs/a.py", False),
        ("src/**", "lib/src/a.py", False),
        ("src/*", "src/a.py", True),
        ("src/*", "src/deep/a.py", False),
        ("*.md", "README.md", True),
        ("*.md", "docs/guide.md", False),
        ("**/*.md", "docs/guide.md", True),
        ("**/*.md", "README.md", True),
        ("a/**/b.txt", "a/b.txt", True),
        ("a/**/b.txt", "a/x/y/b.txt", True),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("file[0-4].txt", "file3.txt", True),
        ("file[!0-4].txt", "file7.txt", True),
        ("file[!0-4].txt", "file3.txt", False),
        ("{a/**,b/*}", "a/x/y.py", True),
        ("{a/**,b/*}", "b/y.py", True),
        ("{a/**,b/*}", "b/x/y.py", False),
        ("{a/**,b/*}", "c/y.py", False),
        ("src/{api,web}/**", "src/web/app.js", True),
        ("src/{api,web}/**", "src/cli/app.js", False),
        ("{src/{api,web}/**,docs/*}", "docs/x.md", True),
        ("/src/**", "src/a.py", True),
        ("./src/**", "/src/a.py", True),
        ("src/a+b(1).py", "src/a+b(1).py", True),
        ("**", ".github/workflows/ci.yml", True),
        ("!docs/**", "src/a.py", True),
        ("!docs/**", "docs/a.md", False),
        ("!{docs/**,*.md}", "CHANGELOG.md", False),
        ("!{docs/**,*.md}", "setup.py", True),
        ("{src/**,!src/**/*.md}", "src/a.py", True),
        ("{src/**,!src/**/*.md}", "src/notes/a.md", False),
        ("{src/**,!src/**/*.md}", "lib/a.py", False),
    ],
)
def test_a_glob_selects_paths(glob: str, path: str, selected: bool) -> None:
    assert compile_glob(glob).selects(path) is selected


def test_a_negated_glob_builds_when_some_file_lies_outside_it() -> None:
    only_docs = replace(PUSH, changed_files=["docs/a.md", "docs/b.md"])
    assert decide(rules(modified_files_glob="!docs/**"), only_docs).rule == "files"
    assert decide(rules(modified_files_glob="!docs/**"), PUSH).build is True


@pytest.mark.parametrize(
    ("glob", "problem"),
    [
        ("{a,b", "glob '{a,b' has a '{' without its '}'"),
        ("a,b}", "glob 'a,b}' has a '}' without its '{'"),
        ("{a,}", "glob '{a,}' has an empty pattern"),
        ("!", "glob '!' has an empty pattern"),
        ("file[z-a].txt", "glob pattern 'file[z-a].txt' is invalid: bad character range z-a"),
        ("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}", "expands to more than 256 patterns"),
    ],
)
def test_an_unusable_glob_is_refused_with_its_reason(glob: str, problem: str) -> None:
    with pytest.raises(RuleError) as caught:
        check_glob(glob)
    assert problem in str(caught.value)


# Shared payloads through several trigger settings

FIXTURE_CASES: list[tuple[str, dict[str, Any], bool, str | None]] = [
    ("github/push-branch-forced-with-commits.json", {"events": ["push"], "branch_regex": "/^master$/"}, True, None),
    ("github/push-branch-forced-with-commits.json", {"repo": "JesseSuen/Test-Repo"}, True, None),
    ("github/push-branch-forced-with-commits.json", {"branch_regex": "/^main$/"}, False, "branch"),
    ("github/push-branch-forced-with-commits.json", {"events": ["pullrequest"]}, False, "event"),
    ("github/push-branch-forced-with-commits.json", {"modified_files_glob": "ksapps/**"}, False, "files"),
    ("github/push-branch-created.json", {"events": ["push.heads"]}, True, None),
    ("github/push-branch-created.json", {"events": ["push.newBranch"]}, True, None),
    ("github/push-branch-created.json", {"events": ["push.tags"]}, False, "event"),
    ("github/push-tag-created.json", {"events": ["push.tags"], "branch_regex": "/^v\\d+\\.\\d+$/"}, True, None),
    ("github/push-tag-created.json", {"events": ["push.heads"]}, False, "event"),
    ("github/push-tag-created.json", {"events": ["push.tags"], "branch_regex": "/^master$/"}, False, "branch"),
    ("github/ping.json", {"events": ["push", "pullrequest"]}, False, "event"),
    (
        "github/pull_request-opened.json",
        {"events": ["pullrequest.opened"], "pr_target_regex": "/^master$/"},
        True,
        None,
    ),
    (
        "github/pull_request-opened.json",
        {"events": ["pullrequest"], "pr_target_regex": "/^release/"},
        False,
        "pr-target",
    ),
    ("github/pull_request-opened.json", {"branch_regex": "/^CHANGES$/i"}, True, None),
    ("github/pull_request-opened.json", {"modified_files_glob": "README.md"}, False, "files"),
    ("github/pull_request-synchronize.json", {"events": ["pullrequest.synchronize"]}, True, None),
    ("github/pull_request-synchronize.json", {"events": ["pullrequest.opened"]}, False, "event"),
    ("github/pull_request-closed-not-merged.json", {"events": ["pullrequest.closed"]}, True, None),
    ("github/pull_request-closed-not-merged.json", {"events": ["pullrequest.unmerged-closed"]}, True, None),
    ("github/pull_request-closed-not-merged.json", {"events": ["pullrequest.merged"]}, False, "event"),
    ("gitlab/doc-push-hook.json", {"events": ["push.heads"], "branch_regex": "master"}, True, None),
    ("gitlab/doc-push-hook.json", {"disabled": True}, False, "disabled"),
    ("gitlab/doc-tag-push-hook.json", {"events": ["push.tags"], "branch_regex": "/^v1\\./"}, True, None),
    ("gitlab/doc-merge-request-hook-open.json", {"events": ["pullrequest.opened"]}, True, None),
    ("gitlab/doc-merge-request-hook-open.json", {"branch_regex": "/^ms-/"}, True, None),
    ("gitlab/merge-request-hook-update-oldrev.json", {"events": ["pullrequest.synchronize"]}, True, None),
    ("gitlab/merge-request-hook-merge.json", {"events": ["pullrequest.merged"]}, True, None),
    ("gitlab/merge-request-hook-merge.json", {"pr_target_regex": "/^develop$/"}, False, "pr-target"),
    ("gitlab/push-hook-branch-deleted.json", {"events": ["push.deleteBranch"]}, True, None),
    ("gitlab/push-hook-branch-deleted.json", {"events": ["push.heads"]}, False, "event"),
    ("gitlab/push-hook-branch-deleted.json", {"modified_files_glob": "**"}, False, "files"),
    ("bitbucket-server/repo-refs-changed-branch-update.json", {"repo": "myproject/test-repo"}, True, None),
    ("bitbucket-server/repo-refs-changed-branch-update.json", {"modified_files_glob": "src/**"}, False, "files"),
    ("bitbucket-server/repo-refs-changed-branch-delete.json", {"branch_regex": "/^feature\\//"}, True, None),
    ("bitbucket-server/repo-refs-changed-tag-created.json", {"events": ["push.tags"]}, True, None),
    (
        "bitbucket-server/repo-refs-changed-personal-project-branch-delete.json",
        {"repo": "~GOPHER/webhook-test"},
        True,
        None,
    ),
    ("bitbucket-server/pr-opened.json", {"events": ["pullrequest.opened"], "pr_target_regex": "master"}, True, None),
    ("bitbucket-server/pr-merged.json", {"events": ["pullrequest.closed"]}, True, None),
    ("bitbucket-server/pr-from-ref-updated.json", {"branch_regex": "/^feature\\/test$/"}, True, None),
    ("bitbucket-server/pr-from-ref-updated.json", {"branch_regex": "/^hotfix\\//"}, False, "branch"),
]


@pytest.mark.parametrize(
    ("name", "settings", "build", "rule"), FIXTURE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FIXTURE_CASES)]
)
def test_a_shared_payload_is_decided_by_its_trigger(
    name: str, settings: dict[str, Any], build: bool, rule: str | None
) -> None:
    provider, headers, _, payload = load(name)
    event = PROVIDER_MODULES[provider].parse(headers, payload)
    base: dict[str, Any] = {"provider": provider, "repo": EXPECTED[name][1].repo, "events": ["push", "pullrequest"]}
    decision = decide(TriggerRules(**(base | settings)), event)
    assert (decision.build, decision.rule) == (build, rule), decision.reason
    assert decision.needs_changed_files is (rule == "files" and event.changed_files is None)


def test_a_shared_payload_with_a_skip_marker_builds_nothing() -> None:
    body = webhook_fixture("gitlab/doc-push-hook.json")
    payload = json.loads(body)
    payload["commits"][-1]["message"] = "fixed readme [Skip CI]"
    event = PROVIDER_MODULES["gitlab"].parse({"X-Gitlab-Event": "Push Hook"}, payload)
    decision = decide(TriggerRules(provider="gitlab", repo="mike/diaspora", events=["push"]), event)
    assert decision == refused("skip-marker", "the commit message contains '[skip ci]'")


def test_a_branch_reason_names_the_branch_and_the_regex() -> None:
    provider, headers, _, payload = load("github/push-branch-forced-with-commits.json")
    event = PROVIDER_MODULES[provider].parse(headers, payload)
    decision = decide(
        TriggerRules(provider="github", repo="jessesuen/test-repo", events=["push"], branch_regex="/^main$/"), event
    )
    assert decision.reason == "branch 'master' does not match /^main$/"
    assert re.fullmatch(r"branch '\w+' does not match /.+/", decision.reason or "")
