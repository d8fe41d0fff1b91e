"""Answering git queries on the runner: the control plane asks (through the poll) for a repository's branches,
a file at a revision, or the files changed between two revisions; the runner asks the Git server, which only
it can reach, and posts the answer (runner protocol: POST /git-queries/{id}/answer)."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

from outpost.engine.engine import PASSED_THROUGH
from outpost.git import access as gitaccess
from outpost.git import remote as gitremote
from outpost.wire import MAX_QUERY_FILE, GitQueryAnswer, GitQueryTask

MARGIN = 1.0  # seconds kept to post the answer before the asker gives up


async def answer(task: GitQueryTask, runner_secrets: Mapping[str, str]) -> GitQueryAnswer:
    """Runs the query against the Git server; every failure becomes an answer with a message for the asker."""
    try:
        remote = _remote(task, runner_secrets)
    except gitaccess.AccessError as exc:
        return GitQueryAnswer(error=str(exc), error_kind="failed")
    seconds = max(task.seconds - MARGIN, 1.0)
    try:
        if task.query == "branches":
            return GitQueryAnswer(branches=await gitremote.branches(remote, seconds=seconds))
        if task.query == "file":
            found = await gitremote.read_file(
                remote, task.revision, task.path or "", max_bytes=MAX_QUERY_FILE, seconds=seconds
            )
            return GitQueryAnswer(revision=found.revision, content=base64.b64encode(found.content).decode())
        base, head, files, cut = await gitremote.changed_files(
            remote, task.base or "", task.head or "", seconds=seconds
        )
        return GitQueryAnswer(base=base, head=head, files=files, truncated=cut)
    except gitremote.FileTooLarge as exc:
        return GitQueryAnswer(error=str(exc), error_kind="too_large")
    except gitremote.NotFoundInRepo as exc:
        return GitQueryAnswer(error=str(exc), error_kind="not_found")
    except gitremote.GitRemoteError as exc:
        return GitQueryAnswer(error=str(exc), error_kind="failed")
    except OSError as exc:  # the runner's own disk: no room for the temporary repository
        return GitQueryAnswer(error=f"the runner cannot ask the Git server: {exc}", error_kind="failed")


def _remote(task: GitQueryTask, runner_secrets: Mapping[str, str]) -> gitremote.Remote:
    username, password = gitaccess.credentials(task.access, runner_secrets)
    return gitremote.Remote(
        url=gitaccess.clone_url(task.access, task.repo),
        username=username,
        password=password,
        env={k: os.environ[k] for k in PASSED_THROUGH if k in os.environ},
    )
