"""YAML from the repository: before a build whose pipeline keeps its codefresh.yml in a repository starts, the
runner reads the file at the build's revision (a shallow, blob-filtered fetch of that one commit) and runs it.

The control plane learns the YAML and the commit SHA with the build's `started` report, so it records exactly
which revision's YAML ran. The repository is read here, next to the Git server, never by the control plane.
"""

from __future__ import annotations

import os
import re
import time

from outpost.engine import BuildEngine, BuildOutcome
from outpost.engine.engine import PASSED_THROUGH
from outpost.git import access as gitaccess
from outpost.git import remote as gitremote
from outpost.git import urls as giturls
from outpost.pipelines.variables import revision_variables
from outpost.runner.outbox import Outbox
from outpost.wire import SYSTEM_STREAM, BuildStarted, PipelineSource, RunBuildTask

READ_TIMEOUT = 120.0  # seconds to read the file
MAX_YAML = 512 * 1024  # bytes: what the control plane accepts as a build's YAML
_SHA = re.compile(r"[0-9a-f]{7,40}")


async def read_into(engine: BuildEngine, task: RunBuildTask, outbox: Outbox) -> BuildOutcome | None:
    """Reads the pipeline file and hands it to the engine, or ends the build (`error`, reason in its log).
    Returns None when the engine should run (also for a build that carries its YAML)."""
    source = task.source
    if source is None:
        return None
    revision = task.revision or task.branch or source.revision
    where = f"{source.path} from {source.repo}" + (f" at {revision}" if revision else "")
    try:
        access = gitaccess.choose(task.integrations, source.git) if source.git or _owner_name(source) else None
        url = gitaccess.clone_url(access, source.repo) if access else source.repo
        username, password = gitaccess.credentials(access, engine.ctx.runner_secrets) if access else (None, None)
        remote = gitremote.Remote(
            url=url,
            username=username,
            password=password,
            env={k: os.environ[k] for k in PASSED_THROUGH if k in os.environ},
        )
        found = await gitremote.read_file(remote, revision, source.path, max_bytes=MAX_YAML, seconds=READ_TIMEOUT)
    except (gitaccess.AccessError, gitremote.GitRemoteError) as exc:
        await outbox.started(BuildStarted(runner_time=time.time()))
        await outbox.log(SYSTEM_STREAM, f"[outpost] cannot read {where}: {exc}\n".encode())
        return BuildOutcome("error", f"cannot read {where}: {exc}")
    text = found.content.decode("utf-8", errors="replace")
    engine.use_pipeline_file(
        text, source.path, _git_variables(source, url, revision or found.default_branch, found.revision)
    )
    outbox.pipeline_file = (text, found.revision)
    await outbox.log(SYSTEM_STREAM, f"[outpost] read {where} ({found.revision[:7]})\n".encode())
    return None


def _owner_name(source: PipelineSource) -> bool:
    return gitaccess.is_owner_name(source.repo)


def _git_variables(source: PipelineSource, url: str, revision: str | None, sha: str) -> dict[str, str]:
    """The CF_* variables known from the repository and commit the YAML was read from."""
    branch = revision if revision and not _SHA.fullmatch(revision) else None  # a SHA names no branch
    variables = revision_variables(branch, sha)
    try:
        repo = giturls.parse_repo_url(url)
        variables.update(CF_REPO_OWNER=repo.owner, CF_REPO_NAME=repo.name)
    except ValueError:
        pass
    return variables
