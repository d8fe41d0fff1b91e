"""The CF_* variables a webhook build gets from its GitEvent (pipeline format section 3)."""

from __future__ import annotations

from outpost.pipelines.variables import revision_variables
from outpost.triggers.event import GitEvent

# CF_COMMIT_MESSAGE escapes only quotes, as Codefresh documents it; the _ESCAPED variants also escape
# what breaks a double-quoted shell string or a one-line value.
_QUOTES = str.maketrans({"'": "\\'", '"': '\\"'})
_SPECIAL = str.maketrans(
    {"\\": "\\\\", "'": "\\'", '"': '\\"', "`": "\\`", "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
)


def escape_quotes(text: str) -> str:
    """`'` → `\\'` and `"` → `\\"` (what Codefresh does to CF_COMMIT_MESSAGE)."""
    return text.translate(_QUOTES)


def escape_special(text: str) -> str:
    """Backslash, quotes, backtick and `$` escaped with a backslash; newline, CR and tab as `\\n` `\\r` `\\t`."""
    return text.translate(_SPECIAL)


def build_variables(event: GitEvent) -> dict[str, str]:
    """Every CF_* variable the event supports; one the event does not know is left out, not empty.

    CF_BRANCH is the branch, or the tag for a tag push or a release; for a pull request it is the
    source branch and CF_BASE_BRANCH the target (for a tag, the branch the tag was made from when the
    provider says). The build's own variables (CF_BUILD_ID, CF_BUILD_URL, ...) come from
    `outpost.pipelines.variables.build_system_variables`.
    """
    found: dict[str, str | None] = {"CF_BUILD_TRIGGER": "webhook", "CF_BUILD_INITIATOR": event.initiator}
    found.update(_repository(event))
    found.update(_commit(event))
    if event.event.startswith("pullrequest."):
        found.update(_pull_request(event))
    if event.event.startswith("release."):
        found.update(
            CF_RELEASE_NAME=event.release_name,
            CF_RELEASE_TAG=event.tag,
            CF_RELEASE_ID=event.release_id,
            CF_PRERELEASE_FLAG=_flag(event.release_prerelease),
        )
    return {name: value for name, value in found.items() if value is not None}


def _repository(event: GitEvent) -> dict[str, str | None]:
    owner, _, name = event.repo.rpartition("/")  # a GitLab subgroup stays in the owner: `group/sub`
    return {
        "CF_REPO_OWNER": owner or None,
        "CF_REPO_NAME": name or None,
        **revision_variables(event.branch or event.tag, event.after),
        "CF_BASE_BRANCH": event.pr_target_branch or event.base_branch,
    }


def _commit(event: GitEvent) -> dict[str, str | None]:
    message = event.commit_message
    return {
        "CF_COMMIT_AUTHOR": event.commit_author,
        "CF_COMMIT_URL": event.commit_url,
        "CF_COMMIT_MESSAGE": escape_quotes(message) if message is not None else None,
        "CF_COMMIT_MESSAGE_ESCAPED": escape_special(message) if message is not None else None,
    }


def _pull_request(event: GitEvent) -> dict[str, str | None]:
    number = str(event.pr_number) if event.pr_number is not None else None
    title = event.pr_title
    return {
        "CF_PULL_REQUEST_ACTION": event.pr_action,
        # Codefresh users read the number from either (GitLab's API takes the iid as the MR "id").
        "CF_PULL_REQUEST_ID": number,
        "CF_PULL_REQUEST_NUMBER": number,
        "CF_PULL_REQUEST_TARGET": event.pr_target_branch,
        "CF_PULL_REQUEST_LABELS": ",".join(event.pr_labels) if event.pr_labels else None,
        "CF_PULL_REQUEST_TITLE": title,
        "CF_PULL_REQUEST_TITLE_ESCAPED": escape_special(title) if title is not None else None,
        "CF_PULL_REQUEST_MERGED": _flag(event.pr_merged),
        "CF_PULL_REQUEST_HEAD_BRANCH": event.pr_source_branch,
        "CF_PULL_REQUEST_MERGED_COMMIT_SHA": event.pr_merged_commit,
        "CF_PULL_REQUEST_HEAD_COMMIT_SHA": event.after,
        "CF_PULL_REQUEST_IS_FORK": _flag(event.pr_fork),
        "CF_PULL_REQUEST_COMMENT": event.pr_comment,
        "CF_PULL_REQUEST_COMMENT_AUTHOR": event.pr_comment_author,
    }


def _flag(value: bool) -> str:
    return "true" if value else "false"
