"""GitLab webhooks: check the `X-Gitlab-Token` shared secret and turn a delivery into a GitEvent.

Event names (`X-Gitlab-Event` → GitEvent.event):

* `Push Hook`: `push.heads`; `push.newBranch` when `before` is all zeros (a trigger on `push` or
  `push.heads` builds it too, see `filters.event_matches`); `push.deleteBranch` when `after` is.
* `Tag Push Hook`: `push.tags`, revision `checkout_sha` (for an annotated tag `after` is the tag
  object, not the commit). Deleting a tag builds nothing.
* `Merge Request Hook`: action open → `pullrequest.opened`, reopen → `reopened`, update with `oldrev`
  (new commits) → `synchronize`, update that adds labels → `labeled`, other updates → `edited`,
  merge → `merged`, close → `unmerged-closed`. Approvals build nothing. `pr_action` keeps GitLab's action.
* `Note Hook` on a merge request: `pullrequest.commentAdded`. Notes on commits, issues or snippets
  build nothing.

The commit (author, message, URL) is the listed commit whose id is `checkout_sha`. Changed files of a
branch push are the union of `added`, `modified` and `removed` over `commits`, and only when GitLab
listed every commit (`total_commits_count` equals the list's length: GitLab lists at most 20) of a push
to an existing branch. GitLab does not flag forced pushes, so for one of those the list covers only the
new commits. A deleted branch changes no file (an empty list); tags and merge requests: None.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from outpost.triggers.event import GitEvent
from outpost.triggers.providers import (
    PayloadError,
    SignatureError,
    UnsupportedEvent,
    dig,
    dispatch,
    header,
    number,
    objects,
    required_text,
    sha_or_none,
    strings,
    text,
)

TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"

MR_ACTIONS = {"open": "opened", "reopen": "reopened", "merge": "merged", "close": "unmerged-closed"}


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise SignatureError unless `X-Gitlab-Token` is the secret (GitLab sends it as is, not an HMAC)."""
    if not secret:
        raise SignatureError("the trigger has no webhook secret")
    sent = header(headers, TOKEN_HEADER)
    if sent is None:
        raise SignatureError(f"missing {TOKEN_HEADER} header")
    if not hmac.compare_digest(sent.encode(), secret.encode()):
        raise SignatureError(f"{TOKEN_HEADER} does not match the trigger's secret")


def parse(headers: Mapping[str, str], payload: Mapping[str, Any]) -> GitEvent:
    """The GitEvent of one delivery; UnsupportedEvent (with a reason) when it starts no build."""
    parsers = {
        "Push Hook": _push,
        "Tag Push Hook": _push,
        "Merge Request Hook": _merge_request,
        "Note Hook": _note,
    }
    return dispatch("gitlab", "GitLab", EVENT_HEADER, parsers, headers, payload)


def _push(payload: Mapping[str, Any]) -> GitEvent:
    ref = required_text(payload, "ref")
    before = sha_or_none(dig(payload, "before"))
    after = sha_or_none(dig(payload, "after"))
    revision = sha_or_none(dig(payload, "checkout_sha")) or after
    commit = next((c for c in objects(payload, "commits") if c.get("id") == revision), {})
    event = GitEvent(
        provider="gitlab",
        event="push.heads",
        repo=required_text(payload, "project", "path_with_namespace"),
        before=before,
        after=revision,
        created=before is None and after is not None,
        deleted=after is None,
        commit_author=text(commit, "author", "name"),
        commit_message=text(commit, "message"),
        commit_url=text(commit, "url"),
        initiator=text(payload, "user_username") or text(payload, "user_name"),
        clone_url=text(payload, "project", "git_http_url"),
    )
    if ref.startswith("refs/tags/"):
        if event.deleted:
            raise UnsupportedEvent(f"tag '{ref.removeprefix('refs/tags/')}' was deleted; nothing to build")
        event.event = "push.tags"
        event.tag = event.branch = ref.removeprefix("refs/tags/")
        return event
    if not ref.startswith("refs/heads/"):
        raise UnsupportedEvent(f"push to '{ref}' is neither a branch nor a tag")
    event.branch = ref.removeprefix("refs/heads/")
    if event.deleted:
        event.event = "push.deleteBranch"
    elif event.created:
        event.event = "push.newBranch"
    event.changed_files = _changed_files(payload, event)
    return event


def _changed_files(payload: Mapping[str, Any], event: GitEvent) -> list[str] | None:
    if event.deleted:
        return []
    commits = objects(payload, "commits")
    if event.created or not commits or dig(payload, "total_commits_count") != len(commits):
        return None
    files: set[str] = set()
    for commit in commits:
        for key in ("added", "modified", "removed"):
            paths = strings(commit, key)
            if paths is None:
                return None
            files.update(paths)
    return sorted(files)


def _merge_request(payload: Mapping[str, Any]) -> GitEvent:
    mr = dig(payload, "object_attributes")
    if not isinstance(mr, Mapping):
        raise PayloadError("malformed payload: `object_attributes` is missing")
    action = text(mr, "action")
    oldrev = sha_or_none(mr.get("oldrev"))
    if action == "update":
        name = "synchronize" if oldrev else "labeled" if _labels_added(payload) else "edited"
    elif action in MR_ACTIONS:
        name = MR_ACTIONS[action]
    else:
        raise UnsupportedEvent(f"merge request action '{action}' is not a trigger event")
    labels = objects(payload, "labels") or objects(mr, "labels")
    event = _merge_request_event(payload, mr, labels)
    event.event = f"pullrequest.{name}"
    event.pr_action = action
    event.before = oldrev
    event.pr_merged = action == "merge"
    event.pr_merged_commit = sha_or_none(mr.get("merge_commit_sha")) if event.pr_merged else None
    return event


def _labels_added(payload: Mapping[str, Any]) -> bool:
    previous = {label.get("id") for label in objects(payload, "changes", "labels", "previous")}
    return any(label.get("id") not in previous for label in objects(payload, "changes", "labels", "current"))


def _note(payload: Mapping[str, Any]) -> GitEvent:
    noteable = text(payload, "object_attributes", "noteable_type")
    if noteable != "MergeRequest":
        raise UnsupportedEvent(f"note on a {noteable or 'unknown object'}, not on a merge request")
    action = text(payload, "object_attributes", "action") or "create"
    if action != "create":
        raise UnsupportedEvent(f"note action '{action}' is not a trigger event")
    mr = dig(payload, "merge_request")
    if not isinstance(mr, Mapping):
        raise PayloadError("malformed payload: `merge_request` is missing")
    event = _merge_request_event(payload, mr, objects(mr, "labels"))
    event.event = "pullrequest.commentAdded"
    event.pr_action = action
    event.pr_comment = text(payload, "object_attributes", "note")
    event.pr_comment_author = text(payload, "user", "username") or text(payload, "user", "name")
    return event


def _merge_request_event(
    payload: Mapping[str, Any], mr: Mapping[str, Any], labels: list[Mapping[str, Any]]
) -> GitEvent:
    """The fields a merge request event and a note on a merge request share."""
    source_branch = required_text(mr, "source_branch")
    source_project = dig(mr, "source_project_id")
    return GitEvent(
        provider="gitlab",
        event="pullrequest",
        repo=required_text(payload, "project", "path_with_namespace"),
        branch=source_branch,
        after=sha_or_none(dig(mr, "last_commit", "id")),
        pr_number=number(mr, "iid"),
        pr_title=text(mr, "title"),
        pr_source_branch=source_branch,
        pr_target_branch=required_text(mr, "target_branch"),
        pr_labels=[title for label in labels if isinstance(title := label.get("title"), str)],
        pr_fork=source_project is None or source_project != dig(mr, "target_project_id"),
        commit_author=text(mr, "last_commit", "author", "name"),
        commit_message=text(mr, "last_commit", "message"),
        commit_url=text(mr, "last_commit", "url"),
        initiator=text(payload, "user", "username") or text(payload, "user", "name"),
        clone_url=text(mr, "source", "git_http_url"),
    )
