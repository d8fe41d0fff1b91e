"""Bitbucket Server / Data Center webhooks: check the `X-Hub-Signature` HMAC and turn a delivery into a GitEvent.

Event names (`X-Event-Key`, which the body repeats as `eventKey` → GitEvent.event):

* `repo:refs_changed`: per change, a BRANCH ref gives `push.heads` (UPDATE), `push.newBranch` (ADD; a
  trigger on `push` or `push.heads` builds it too) or `push.deleteBranch` (DELETE); a TAG ref gives
  `push.tags` (ADD or UPDATE; deleting a tag builds nothing). One delivery may change several refs:
  `parse` returns the first change that builds, `parse_all` every one.
* `pr:opened` → `pullrequest.opened`, `pr:from_ref_updated` → `synchronize`, `pr:modified` → `edited`,
  `pr:reopened` → `reopened`, `pr:merged` → `merged`, `pr:declined` → `unmerged-closed`,
  `pr:comment:added` → `pullrequest.commentAdded`. `pr_action` keeps the key without `pr:`.
* `diagnostics:ping` (the "Test connection" button): `ping`.

The repository is `PROJECT/slug` (a personal project's key is `~user`). Bitbucket Server lists no changed
files, so `changed_files` is None (an empty list for a deleted branch, which changes no file). Pushes
carry the commit's author and message only in newer versions (`toCommit`); the commit URL is made from
the repository's browse link when the payload has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outpost.triggers.event import GitEvent
from outpost.triggers.providers import (
    PayloadError,
    UnsupportedEvent,
    delivery_id,
    dig,
    header,
    number,
    objects,
    required_text,
    sha_or_none,
    text,
    verify_hmac_sha256,
)

SIGNATURE_HEADER = "X-Hub-Signature"
EVENT_HEADER = "X-Event-Key"

PR_EVENTS = {
    "pr:opened": "pullrequest.opened",
    "pr:from_ref_updated": "pullrequest.synchronize",
    "pr:modified": "pullrequest.edited",
    "pr:reopened": "pullrequest.reopened",
    "pr:merged": "pullrequest.merged",
    "pr:declined": "pullrequest.unmerged-closed",
    "pr:comment:added": "pullrequest.commentAdded",
}


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise SignatureError unless `X-Hub-Signature` is `sha256=` + the hex HMAC-SHA256 of `body`."""
    verify_hmac_sha256(headers, body, secret, SIGNATURE_HEADER, " (use HMAC-SHA256)")


def parse(headers: Mapping[str, str], payload: Mapping[str, Any]) -> GitEvent:
    """The GitEvent of one delivery (of its first ref change that builds); UnsupportedEvent when none builds."""
    events = parse_all(headers, payload)
    return events[0]


def parse_all(headers: Mapping[str, str], payload: Mapping[str, Any]) -> list[GitEvent]:
    """One GitEvent per ref change that builds (one for the other events); UnsupportedEvent when none builds."""
    key = header(headers, EVENT_HEADER) or text(payload, "eventKey")
    if not key:
        raise UnsupportedEvent(f"missing {EVENT_HEADER} header")
    if key == "diagnostics:ping":
        events = [GitEvent(provider="bitbucket-server", event="ping", repo=_repo_name(payload, "repository"))]
    elif key == "repo:refs_changed":
        events = _refs_changed(payload)
    elif key in PR_EVENTS:
        events = [_pull_request(key, payload)]
    else:
        raise UnsupportedEvent(f"Bitbucket Server event '{key}' is not a trigger event")
    for event in events:
        event.delivery_id = delivery_id("bitbucket-server", headers)
        event.payload = dict(payload)
    return events


def _refs_changed(payload: Mapping[str, Any]) -> list[GitEvent]:
    events: list[GitEvent] = []
    reasons: list[str] = []
    for change in objects(payload, "changes"):
        try:
            events.append(_ref_change(payload, change))
        except PayloadError:
            raise
        except UnsupportedEvent as refused:
            reasons.append(refused.reason)
    if not events:
        raise UnsupportedEvent("; ".join(reasons) or "repo:refs_changed lists no ref changes")
    return events


def _ref_change(payload: Mapping[str, Any], change: Mapping[str, Any]) -> GitEvent:
    ref_type = text(change, "ref", "type")
    name = required_text(change, "ref", "displayId")
    change_type = text(change, "type")
    after = sha_or_none(change.get("toHash"))
    commit = dig(payload, "toCommit")
    commit = commit if isinstance(commit, Mapping) and after and commit.get("id") == after else {}
    event = GitEvent(
        provider="bitbucket-server",
        event="push.heads",
        repo=_repo_name(payload, "repository"),
        branch=name,
        before=sha_or_none(change.get("fromHash")),
        after=after,
        created=change_type == "ADD",
        deleted=change_type == "DELETE",
        commit_author=text(commit, "author", "name"),
        commit_message=text(commit, "message"),
        commit_url=_commit_url(payload.get("repository"), after),
        initiator=text(payload, "actor", "name"),
        clone_url=_clone_url(payload.get("repository")),
    )
    if ref_type == "TAG":
        if event.deleted:
            raise UnsupportedEvent(f"tag '{name}' was deleted; nothing to build")
        event.event = "push.tags"
        event.tag = name
        return event
    if ref_type != "BRANCH":
        raise UnsupportedEvent(f"change to '{name}' is neither a branch nor a tag")
    if event.deleted:
        event.event = "push.deleteBranch"
        event.changed_files = []
    elif event.created:
        event.event = "push.newBranch"
    return event


def _pull_request(key: str, payload: Mapping[str, Any]) -> GitEvent:
    pr = dig(payload, "pullRequest")
    if not isinstance(pr, Mapping):
        raise PayloadError("malformed payload: `pullRequest` is missing")
    source_branch = required_text(pr, "fromRef", "displayId")
    after = sha_or_none(dig(pr, "fromRef", "latestCommit"))
    source_repo = dig(pr, "fromRef", "repository", "id")
    merged = key == "pr:merged"
    return GitEvent(
        provider="bitbucket-server",
        event=PR_EVENTS[key],
        repo=_repo_name(pr, "toRef", "repository"),
        branch=source_branch,
        before=sha_or_none(payload.get("previousFromHash")),
        after=after,
        pr_number=number(pr, "id"),
        pr_title=text(pr, "title"),
        pr_action=key.removeprefix("pr:"),
        pr_source_branch=source_branch,
        pr_target_branch=required_text(pr, "toRef", "displayId"),
        pr_merged=merged,
        pr_merged_commit=sha_or_none(dig(pr, "properties", "mergeCommit", "id")) if merged else None,
        pr_fork=source_repo is None or source_repo != dig(pr, "toRef", "repository", "id"),
        pr_comment=text(payload, "comment", "text"),
        pr_comment_author=text(payload, "comment", "author", "name"),
        commit_url=_commit_url(dig(pr, "fromRef", "repository"), after),
        initiator=text(payload, "actor", "name"),
        clone_url=_clone_url(dig(pr, "fromRef", "repository")),
    )


def _repo_name(payload: Mapping[str, Any], *path: str) -> str:
    """`PROJECT/slug`, or "" when the payload names no repository (a ping)."""
    if dig(payload, *path) is None:
        return ""
    return f"{required_text(payload, *path, 'project', 'key')}/{required_text(payload, *path, 'slug')}"


def _clone_url(repository: object) -> str | None:
    if not isinstance(repository, Mapping):
        return None
    links = objects(repository, "links", "clone")
    return next((text(link, "href") for link in links if link.get("name") == "http"), None)


def _commit_url(repository: object, sha: str | None) -> str | None:
    """The commit's page, made from the repository's browse link (`.../repos/r/browse` → `.../repos/r/commits/sha`)."""
    if not isinstance(repository, Mapping) or not sha:
        return None
    links = objects(repository, "links", "self")
    browse = text(links[0], "href") if links else None
    if not browse or not browse.endswith("/browse"):
        return None
    return f"{browse.removesuffix('/browse')}/commits/{sha}"
