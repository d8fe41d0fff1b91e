"""The git-clone step as a build runs it: the step's fields (and a git integration) made into a clone request,
the clone bounded by the step's timeout and scope, and its variables and members taken into the build."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from outpost.engine.commands import PASSED_THROUGH
from outpost.engine.reporting import Reporter, masked_log
from outpost.engine.results import StepResult, duration
from outpost.engine.scopes import Scope
from outpost.engine.state import BuildState
from outpost.executors.base import Output
from outpost.git import access as gitaccess
from outpost.git import clone as gitclone
from outpost.git.urls import repo_dir_name
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import substitute
from outpost.wire import GitAccess


async def run_clone(
    step: Step,
    scope: Scope,
    *,
    state: BuildState,
    reporter: Reporter,
    integrations: Mapping[str, GitAccess],
    runner_secrets: Mapping[str, str],
) -> StepResult:
    """Clones on the runner, next to the Git server; the control plane never sees the repository."""
    values = state.scope_vars()
    repo = _text(step, values, "repo") or ""
    username, password = _credentials(step, values)
    try:
        repo, username, password = through_integration(
            integrations, runner_secrets, _text(step, values, "git"), repo, username, password
        )
    except gitaccess.AccessError as exc:
        await reporter.log(step.name, f"[outpost] {exc}\n".encode())
        return StepResult("failure", message=str(exc))
    if password:
        state.masked.add(password)
    try:
        folder = repo_dir_name(repo)
    except ValueError as exc:
        return StepResult("error", message=str(exc))
    parent = state.workdir(step, values) if step.working_directory else state.volume
    depth = _text(step, values, "depth")
    request = gitclone.CloneRequest(
        repo=repo,
        target=parent / folder,
        revision=_text(step, values, "revision"),
        username=username,
        password=password,
        depth=int(depth) if depth and depth.isdigit() and int(depth) > 0 else None,
        exclude_blobs=state.truthy(step.fields.get("exclude_blobs"), default=False),
        use_proxy=state.truthy(step.fields.get("use_proxy"), default=False),
        env={k: os.environ[k] for k in PASSED_THROUGH if k in os.environ},
        skip_tags_on_update=state.truthy(step.fields.get("skip_tags_on_update"), default=False),
    )
    async with masked_log(reporter, step.name, state.masked) as output:
        result, finished = await _clone(step, request, output, scope)
    if not finished and not scope.stopped:
        return StepResult("failure", message=f"step timed out after {duration(step.timeout or 0)}")
    if result.status == "terminated":
        return StepResult("terminated", message=scope.why or result.message)
    if result.status != "success":
        return StepResult("failure", exit_code=result.exit_code, message=result.message)
    _take(state, step, result, result.workdir or request.target, repo)
    return StepResult("success", exit_code=0)


def through_integration(
    integrations: Mapping[str, GitAccess],
    runner_secrets: Mapping[str, str],
    git: str | None,
    repo: str,
    username: str | None,
    password: str | None,
) -> tuple[str, str | None, str | None]:
    """The clone URL and credentials of a git-clone step: `owner/name` and steps naming `git` go through a git
    integration (the named one, or the default); the step's own `credentials` win over the integration's."""
    if not git and not gitaccess.is_owner_name(repo):
        return repo, username, password
    access = gitaccess.choose(integrations, git)
    url = gitaccess.clone_url(access, repo)
    if username or password:
        return url, username, password
    user, secret = gitaccess.credentials(access, runner_secrets)
    return url, user, secret


def _text(step: Step, values: Mapping[str, str], name: str) -> str | None:
    value = step.fields.get(name)
    return substitute(str(value), values).strip() or None if value is not None else None


def _credentials(step: Step, values: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The step's own `credentials`, if it has them."""
    credentials = step.fields.get("credentials") if isinstance(step.fields.get("credentials"), dict) else {}
    username = substitute(str(credentials.get("username") or ""), values) or None if credentials else None
    password = substitute(str(credentials.get("password") or ""), values) or None if credentials else None
    return username, password


async def _clone(
    step: Step, request: gitclone.CloneRequest, output: Output, scope: Scope
) -> tuple[gitclone.CloneResult, bool]:
    """The clone's result, and whether it finished by itself: when the step times out or its scope is stopped,
    the clone is asked to end (git and its helpers are stopped) and awaited."""
    stop = asyncio.Event()
    clone = asyncio.create_task(gitclone.clone(request, output, cancel=stop))
    stops = [asyncio.create_task(e.wait()) for e in scope.events()]
    try:
        done, _ = await asyncio.wait({clone, *stops}, timeout=step.timeout, return_when="FIRST_COMPLETED")
        if clone not in done:
            stop.set()
            await clone
    finally:
        for s in stops:
            s.cancel()
    return clone.result(), clone in done


def _take(state: BuildState, step: Step, result: gitclone.CloneResult, checkout: Path, repo: str) -> None:
    """The clone's variables and members; a `main_clone` checkout becomes where later steps start."""
    state.variables.update(result.variables)
    state.members.update(
        {
            step.name: str(checkout),
            f"steps.{step.name}.revision": result.variables.get("CF_REVISION", ""),
            f"steps.{step.name}.repo": repo,
        }
    )
    if step.name == "main_clone":
        state.main_clone = checkout
