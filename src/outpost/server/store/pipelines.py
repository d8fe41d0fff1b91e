"""Pipelines: a name, the codefresh.yml they run, the runtime that runs them and their variables."""

from __future__ import annotations

import re

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid, NotFound, PipelineError
from outpost.pipelines.parsing import load_pipeline
from outpost.server.models import Pipeline, Runtime
from outpost.server.security import new_id, now
from outpost.server.store import audit
from outpost.server.store.accounts import ADMIN, DEVELOPER, Principal, check_role, rank, require
from outpost.server.store.integrations import default_integration, find_integration
from outpost.server.store.runtimes import check_name, default_runtime, get_runtime

MAX_YAML = 512 * 1024
_FULL_URL = re.compile(r"^([a-z][a-z0-9+.-]*://\S+|[^@/:\s]+@[^@/:\s]+:\S+)$")
_OWNER_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)+$")


def check_yaml(yaml: str, yaml_file: str) -> None:
    """Raises Invalid with every problem when the YAML is not a valid pipeline."""
    if len(yaml.encode()) > MAX_YAML:
        raise Invalid(f"the pipeline file is larger than {MAX_YAML // 1024} KiB")
    try:
        load_pipeline(yaml, yaml_file)
    except PipelineError as exc:
        raise Invalid("the pipeline file is invalid", problems=[str(p) for p in exc.problems]) from None


def check_variables(variables: dict[str, str], secrets: dict[str, str] | None = None) -> None:
    for key in [*variables, *(secrets or {})]:
        if not key or not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key):
            raise Invalid(f"variable name {key!r} must be letters, digits and '_', not starting with a digit")
    both = sorted(set(variables) & set(secrets or {}))
    if both:
        raise Invalid(f"a variable cannot also be a secret: {', '.join(both)}")


async def check_source(
    session: AsyncSession, principal: Principal, repo: str, git: str | None, yaml_file: str, revision: str | None
) -> None:
    """YAML from the repository: a full URL or owner/name (through the named or the default git integration),
    and a relative path. Only names are checked: nothing is contacted."""
    if not _FULL_URL.match(repo) and not _OWNER_NAME.match(repo):
        raise Invalid(f"repo {repo!r} must be owner/name (through a git integration) or a full clone URL", field="repo")
    parts = yaml_file.split("/")
    if yaml_file.startswith("/") or ".." in parts or not yaml_file.strip() or "\0" in yaml_file:
        raise Invalid(f"the YAML path {yaml_file!r} must be a relative path inside the repository", field="path")
    if revision is not None and (not revision.strip() or len(revision) > 255 or any(c.isspace() for c in revision)):
        raise Invalid(f"revision {revision!r} must be a branch, tag or SHA", field="revision")
    if git:
        if await find_integration(session, principal.account_id, "git", git) is None:
            raise Invalid(
                f"no git integration {git!r} in this account: add it with `outpost integration add git`", field="git"
            )
    elif not _FULL_URL.match(repo) and await default_integration(session, principal.account_id, "git") is None:
        raise Invalid(
            f"repo {repo!r} is owner/name: give --git INTEGRATION (there is no default git integration)", field="git"
        )


async def create_pipeline(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    yaml: str = "",
    yaml_file: str = "codefresh.yml",
    runtime: str | None = None,
    variables: dict[str, str] | None = None,
    sealed_secrets: dict[str, str] | None = None,
    repo: str | None = None,
    git: str | None = None,
    revision: str | None = None,
    approval_role: str | None = None,
    approval_requires_other: bool | None = None,
) -> Pipeline:
    """`sealed_secrets` maps names to values already encrypted by the caller's SecretBox. With `repo`, the
    pipeline keeps no YAML: a runner reads `yaml_file` from the repository when a build starts."""
    check_name("pipeline", name)
    if repo:
        if yaml.strip():
            raise Invalid("give the YAML or a repository to read it from, not both")
        await check_source(session, principal, repo, git, yaml_file, revision)
    else:
        if git or revision:
            raise Invalid("--git and --revision go with --repo (YAML from the repository)")
        check_yaml(yaml, yaml_file)
    check_variables(variables or {}, sealed_secrets or {})
    if await find_pipeline(session, principal, name) is not None:
        raise Conflict(f"pipeline {name!r} already exists")
    rt = await _runtime(session, principal, runtime)
    t = now()
    pipeline = Pipeline(
        id=new_id(),
        account_id=principal.account_id,
        runtime_id=rt.id,
        name=name,
        yaml=yaml,
        yaml_file=yaml_file,
        variables=dict(variables or {}),
        secrets=dict(sealed_secrets or {}),
        created_at=t,
        updated_at=t,
        repo=repo or None,
        git=(git or None) if repo else None,
        revision=(revision or None) if repo else None,
        approval_role=_approval_role(principal, approval_role or DEVELOPER, DEVELOPER),
        approval_requires_other=bool(approval_requires_other),
    )
    session.add(pipeline)
    await session.flush()
    await audit.record(session, principal, "pipeline.create", name, secrets=sorted(sealed_secrets or {}) or None)
    return pipeline


async def update_pipeline(
    session: AsyncSession,
    principal: Principal,
    name: str,
    *,
    yaml: str | None = None,
    yaml_file: str | None = None,
    runtime: str | None = None,
    variables: dict[str, str] | None = None,
    sealed_secrets: dict[str, str] | None = None,
    repo: str | None = None,
    git: str | None = None,
    revision: str | None = None,
    approval_role: str | None = None,
    approval_requires_other: bool | None = None,
) -> Pipeline:
    """Changes only what is given. `git=""` and `revision=""` go back to the defaults (the default integration;
    the branch a build asks for). Giving `yaml` without `repo` moves the YAML into Outpost."""
    pipeline = await get_pipeline(session, principal, name)
    if yaml is not None and repo is None:
        if git or revision:
            raise Invalid("--git and --revision go with --repo (YAML from the repository)")
        check_yaml(yaml, yaml_file or pipeline.yaml_file)
        pipeline.yaml = yaml
        pipeline.repo = pipeline.git = pipeline.revision = None  # the YAML is kept here from now on
    elif repo is not None or (pipeline.repo and (git is not None or revision is not None or yaml_file is not None)):
        if yaml is not None:
            raise Invalid("give the YAML or a repository to read it from, not both")
        pipeline.repo = repo or pipeline.repo
        if git is not None:
            pipeline.git = git or None
        if revision is not None:
            pipeline.revision = revision or None
        assert pipeline.repo is not None
        await check_source(
            session, principal, pipeline.repo, pipeline.git, yaml_file or pipeline.yaml_file, pipeline.revision
        )
        pipeline.yaml = ""
    if yaml_file is not None:
        pipeline.yaml_file = yaml_file
    if runtime is not None:
        pipeline.runtime_id = (await get_runtime(session, principal, runtime)).id
    if variables is not None or sealed_secrets is not None:
        new_variables = pipeline.variables if variables is None else variables
        new_secrets = pipeline.secrets if sealed_secrets is None else sealed_secrets
        check_variables(new_variables, new_secrets)
        pipeline.variables, pipeline.secrets = dict(new_variables), dict(new_secrets)
    if approval_role is not None:
        pipeline.approval_role = _approval_role(principal, approval_role, pipeline.approval_role)
    if approval_requires_other is not None and approval_requires_other != pipeline.approval_requires_other:
        if not approval_requires_other:
            require(principal, ADMIN)  # loosening who may approve is an admin's call
        pipeline.approval_requires_other = approval_requires_other
    pipeline.updated_at = now()
    changed = {
        k: v
        for k, v in {
            "yaml": yaml is not None,
            "yaml_file": yaml_file,
            "runtime": runtime,
            "variables": sorted(variables) if variables is not None else None,
            "secrets": sorted(sealed_secrets) if sealed_secrets is not None else None,
            "repo": repo,
            "approval_role": approval_role,
            "approval_requires_other": approval_requires_other,
        }.items()
        if v not in (None, False)
    }
    await audit.record(session, principal, "pipeline.update", name, changed=changed)
    return pipeline


def _approval_role(principal: Principal, role: str, current: str) -> str:
    """Anyone who edits the pipeline may make its approvals stricter; only an admin may loosen them, so a
    developer cannot lower the bar an admin set and then approve their own build."""
    check_role(role)
    if rank(role) < rank(current):
        require(principal, ADMIN)
    return role


async def _runtime(session: AsyncSession, principal: Principal, name: str | None) -> Runtime:
    if name:
        return await get_runtime(session, principal, name)
    return await default_runtime(session, principal)


# Built once: every build request looks its pipeline up by name (building the statement cost more than running it).
_BY_NAME = select(Pipeline).where(Pipeline.account_id == bindparam("account_id"), Pipeline.name == bindparam("name"))
_BY_NAME_SCOPED = _BY_NAME.where(Pipeline.id == bindparam("pipeline_id"))  # a scoped token sees its one pipeline only


async def find_pipeline(session: AsyncSession, principal: Principal, name: str) -> Pipeline | None:
    values = {"account_id": principal.account_id, "name": name}
    if principal.pipeline_id:
        values["pipeline_id"] = principal.pipeline_id
    result: Pipeline | None = await session.scalar(_BY_NAME_SCOPED if principal.pipeline_id else _BY_NAME, values)
    return result


async def get_pipeline(session: AsyncSession, principal: Principal, name: str) -> Pipeline:
    pipeline = await find_pipeline(session, principal, name)
    if pipeline is None:
        raise NotFound(f"no pipeline {name!r} in this account")
    return pipeline


async def list_pipelines(session: AsyncSession, principal: Principal) -> list[Pipeline]:
    query = select(Pipeline).where(Pipeline.account_id == principal.account_id)
    if principal.pipeline_id:
        query = query.where(Pipeline.id == principal.pipeline_id)
    return list(await session.scalars(query.order_by(Pipeline.name)))
