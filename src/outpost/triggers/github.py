"""GitHub webhooks: check the `X-Hub-Signature-256` HMAC and turn a delivery into a GitEvent.

Event names (`X-GitHub-Event` → GitEvent.event):

* `push` to `refs/heads/B`: `push.heads`; `push.newBranch` when the push creates B (also when it brings
  commits: a trigger on `push` or `push.heads` builds it too, see `filters.event_matches`);
  `push.deleteBranch` when it deletes B.
* `push` to `refs/tags/T`: `push.tags` (branch and tag are both T). Deleting a tag builds nothing.
* `pull_request`: `pullrequest.<action>` for opened, reopened, synchronize, edited and labeled; closed
  becomes `pullrequest.merged` or `pullrequest.unmerged-closed`. `pr_action` keeps GitHub's action.
* `issue_comment` created on a pull request: `pullrequest.commentAdded`. GitHub's payload names neither
  the head branch nor its revision nor the source repository, so `branch`/`after` stay None and
  `pr_fork` is True (unknown counts as a fork) until the server looks the pull request up.
* `release`: `release.<action>` (published, created, released, ...), with the tag as branch.
* `ping`: `ping`. Anything else (`create`, `delete`, ...: pushes already report new refs) is unsupported.

Changed files of a branch push are the union of `added`, `modified` and `removed` over `commits`, and
only when that list is surely the whole diff from `before` to `after`: not for a new branch (its commits
are the ones new to the repository, not a diff against the branch it came from), a forced push (the
dropped commits changed files too), a push of 20 commits or more (GitHub has truncated `commits` at 20),
or a commit listing 3,000 paths or more (GitHub truncates long file lists). A deleted branch changes no
file (an empty list); tags and pull requests have no file lists (None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from outpost.triggers.event import GitEvent
from outpost.triggers.providers import (
    PayloadError,
    UnsupportedEvent,
    dig,
    dispatch,
    number,
    objects,
    required_text,
    sha_or_none,
    strings,
    text,
    verify_hmac_sha256,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"

PR_ACTIONS = frozenset({"opened", "reopened", "synchronize", "edited", "labeled", "closed"})
COMMITS_CAP = 20  # a push listing this many commits may have had more
FILES_CAP = 3000  # a commit listing this many paths may have changed more

_FULL_SHA = re.compile(r"[0-9a-f]{40}")


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise SignatureError unless `X-Hub-Signature-256` is `sha256=` + the hex HMAC-SHA256 of `body`."""
    verify_hmac_sha256(headers, body, secret, SIGNATURE_HEADER)


def parse(headers: Mapping[str, str], payload: Mapping[str, Any]) -> GitEvent:
    """The GitEvent of one delivery; UnsupportedEvent (with a reason) when it starts no build."""
    parsers = {
        "push": _push,
        "pull_request": _pull_request,
        "issue_comment": _issue_comment,
        "release": _release,
        "ping": _ping,
    }
    return dispatch("github", "GitHub", EVENT_HEADER, parsers, headers, payload)


def _push(payload: Mapping[str, Any]) -> GitEvent:
    ref = required_text(payload, "ref")
    created = dig(payload, "created") is True
    deleted = dig(payload, "deleted") is True
    head = dig(payload, "head_commit")
    head = head if isinstance(head, Mapping) else {}
    event = GitEvent(
        provider="github",
        event="push.heads",
        repo=required_text(payload, "repository", "full_name"),
        before=sha_or_none(dig(payload, "before")),
        after=sha_or_none(dig(payload, "after")),
        created=created,
        deleted=deleted,
        commit_author=text(head, "author", "name") or text(head, "author", "username"),
        commit_message=text(head, "message"),
        commit_url=text(head, "url"),
        initiator=text(payload, "pusher", "name") or text(payload, "sender", "login"),
        clone_url=text(payload, "repository", "clone_url"),
    )
    if ref.startswith("refs/tags/"):
        if deleted:
            raise UnsupportedEvent(f"tag '{ref.removeprefix('refs/tags/')}' was deleted; nothing to build")
        event.event = "push.tags"
        event.tag = event.branch = ref.removeprefix("refs/tags/")
        base_ref = text(payload, "base_ref")
        event.base_branch = base_ref.removeprefix("refs/heads/") if base_ref else None
        return event
    if not ref.startswith("refs/heads/"):
        raise UnsupportedEvent(f"push to '{ref}' is neither a branch nor a tag")
    event.branch = ref.removeprefix("refs/heads/")
    if deleted:
        event.event = "push.deleteBranch"
    elif created:
        event.event = "push.newBranch"
    event.changed_files = _changed_files(payload, created=created, deleted=deleted)
    return event


def _changed_files(payload: Mapping[str, Any], *, created: bool, deleted: bool) -> list[str] | None:
    if deleted:
        return []
    if created or dig(payload, "forced") is True:
        return None
    commits = objects(payload, "commits")
    if not commits or len(commits) >= COMMITS_CAP:
        return None
    files: set[str] = set()
    for commit in commits:
        for key in ("added", "modified", "removed"):
            paths = strings(commit, key)
            if paths is None or len(paths) >= FILES_CAP:
                return None
            files.update(paths)
    return sorted(files)


def _pull_request(payload: Mapping[str, Any]) -> GitEvent:
    action = required_text(payload, "action")
    if action not in PR_ACTIONS:
        raise UnsupportedEvent(f"pull_request action '{action}' is not a trigger event")
    pr = dig(payload, "pull_request")
    if not isinstance(pr, Mapping):
        raise PayloadError("malformed payload: `pull_request` is missing")
    merged = dig(pr, "merged") is True
    name = f"pullrequest.{action}"
    if action == "closed":
        name = "pullrequest.merged" if merged else "pullrequest.unmerged-closed"
    head_sha = sha_or_none(dig(pr, "head", "sha"))
    head_repo = text(pr, "head", "repo", "full_name")
    head_page = text(pr, "head", "repo", "html_url")
    return GitEvent(
        provider="github",
        event=name,
        repo=required_text(payload, "repository", "full_name"),
        branch=required_text(pr, "head", "ref"),
        before=sha_or_none(dig(payload, "before")),
        after=head_sha,
        pr_number=number(pr, "number"),
        pr_title=text(pr, "title"),
        pr_action=action,
        pr_source_branch=required_text(pr, "head", "ref"),
        pr_target_branch=required_text(pr, "base", "ref"),
        pr_labels=_label_names(pr),
        pr_merged=merged,
        pr_merged_commit=sha_or_none(dig(pr, "merge_commit_sha")) if merged else None,
        # A deleted fork has no head repository: it can only have been a fork.
        pr_fork=head_repo is None or head_repo.lower() != (text(pr, "base", "repo", "full_name") or "").lower(),
        commit_url=f"{head_page}/commit/{head_sha}" if head_page and head_sha else None,
        initiator=text(payload, "sender", "login"),
        clone_url=text(pr, "head", "repo", "clone_url"),
    )


def _issue_comment(payload: Mapping[str, Any]) -> GitEvent:
    action = required_text(payload, "action")
    issue = dig(payload, "issue")
    if not isinstance(issue, Mapping) or issue.get("pull_request") is None:
        raise UnsupportedEvent("issue_comment on an issue, not on a pull request")
    if action != "created":
        raise UnsupportedEvent(f"issue_comment action '{action}' is not a trigger event")
    return GitEvent(
        provider="github",
        event="pullrequest.commentAdded",
        repo=required_text(payload, "repository", "full_name"),
        pr_number=number(issue, "number"),
        pr_title=text(issue, "title"),
        pr_action=action,
        pr_labels=_label_names(issue),
        pr_fork=True,
        pr_comment=text(payload, "comment", "body"),
        pr_comment_author=text(payload, "comment", "user", "login"),
        initiator=text(payload, "sender", "login"),
        clone_url=text(payload, "repository", "clone_url"),
    )


def _release(payload: Mapping[str, Any]) -> GitEvent:
    action = required_text(payload, "action")
    tag = required_text(payload, "release", "tag_name")
    release_id = dig(payload, "release", "id")
    commitish = text(payload, "release", "target_commitish")
    return GitEvent(
        provider="github",
        event=f"release.{action}",
        repo=required_text(payload, "repository", "full_name"),
        branch=tag,
        tag=tag,
        after=commitish if commitish and _FULL_SHA.fullmatch(commitish) else None,
        initiator=text(payload, "sender", "login"),
        clone_url=text(payload, "repository", "clone_url"),
        release_id=None if release_id is None else str(release_id),
        release_name=text(payload, "release", "name") or tag,
        release_prerelease=dig(payload, "release", "prerelease") is True,
    )


def _ping(payload: Mapping[str, Any]) -> GitEvent:
    return GitEvent(
        provider="github",
        event="ping",
        repo=text(payload, "repository", "full_name") or "",
        initiator=text(payload, "sender", "login"),
    )


def _label_names(owner: Mapping[str, Any]) -> list[str]:
    return [name for label in objects(owner, "labels") if isinstance(name := label.get("name"), str)]
