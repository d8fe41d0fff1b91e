"""The provider-neutral shapes shared by the webhook parsers, the trigger rules and the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Provider = Literal["github", "gitlab", "bitbucket-server"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitlab", "bitbucket-server")


@dataclass
class GitEvent:
    """One thing that happened in a repository, whatever provider told us.

    `event` is the trigger event name of the pipeline format: `push.heads`, `push.tags`, `push.newBranch`,
    `push.deleteBranch`, `pullrequest.opened`, `pullrequest.synchronize`, `pullrequest.closed`,
    `pullrequest.merged`, `pullrequest.unmerged-closed`, `pullrequest.reopened`, `pullrequest.edited`,
    `pullrequest.labeled`, `pullrequest.commentAdded`, `release.published`, ... or `ping` for a
    provider's test delivery. A trigger subscribed to `push` matches every `push.*`, and to `pullrequest`
    every `pullrequest.*`.
    """

    provider: Provider
    event: str
    repo: str  # owner/name as the provider spells it (Bitbucket Server: PROJECT/repo)
    delivery_id: str | None = None
    branch: str | None = None  # the pushed branch, or the PR's source (head) branch; a tag name for tags
    tag: str | None = None
    before: str | None = None
    after: str | None = None  # the revision to build
    created: bool = False
    deleted: bool = False
    pr_number: int | None = None
    pr_title: str | None = None
    pr_action: str | None = None  # as the provider says it (opened, synchronize, merge, ...)
    pr_source_branch: str | None = None
    pr_target_branch: str | None = None
    pr_labels: list[str] = field(default_factory=list)
    pr_merged: bool = False
    pr_merged_commit: str | None = None
    pr_fork: bool = False
    pr_comment: str | None = None
    pr_comment_author: str | None = None
    commit_author: str | None = None
    commit_message: str | None = None
    commit_url: str | None = None
    initiator: str | None = None  # the pusher / actor
    clone_url: str | None = None
    changed_files: list[str] | None = None  # None when the payload does not list them completely
    payload: dict[str, Any] = field(default_factory=dict)
    base_branch: str | None = None  # the branch a pushed tag was made from, when the provider says (GitHub)
    release_id: str | None = None  # release.* events (GitHub): the provider's release id, name and pre-release flag
    release_name: str | None = None
    release_prerelease: bool = False


@dataclass
class TriggerRules:
    """What a trigger accepts (pipeline format section 6)."""

    provider: Provider
    repo: str
    events: list[str]  # e.g. ["push", "pullrequest.opened"]
    branch_regex: str | None = None  # `/.../flags` or a plain regex; None = every branch
    pr_target_regex: str | None = None
    comment_regex: str | None = None
    modified_files_glob: str | None = None  # `{a/**,b/*}` groups, `!x` negation
    allow_fork_events: bool = False
    disabled: bool = False


@dataclass
class Decision:
    """Whether a trigger builds an event. When not, `rule` names the filter and `reason` says why."""

    build: bool
    # "disabled", "repo", "event", "branch", "pr-target", "comment", "fork", "skip-marker" or "files"
    rule: str | None = None
    reason: str | None = None
    needs_changed_files: bool = False  # the glob could not be checked: the payload's file list is incomplete
