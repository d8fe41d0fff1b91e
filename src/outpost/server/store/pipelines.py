"""Pipelines: a name, the codefresh.yml they run, the runtime that runs them and their variables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Conflict, Invalid, NotFound, PipelineError
from outpost.pipelines.parsing import load_pipeline
from outpost.server.models import Pipeline, Runtime
from outpost.server.security import new_id, now
from outpost.server.store.accounts import Principal
from outpost.server.store.runtimes import check_name, default_runtime, get_runtime

MAX_YAML = 512 * 1024


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


async def create_pipeline(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    yaml: str,
    yaml_file: str = "codefresh.yml",
    runtime: str | None = None,
    variables: dict[str, str] | None = None,
    sealed_secrets: dict[str, str] | None = None,
) -> Pipeline:
    """`sealed_secrets` maps names to values already encrypted by the caller's SecretBox."""
    check_name("pipeline", name)
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
    )
    session.add(pipeline)
    await session.flush()
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
) -> Pipeline:
    pipeline = await get_pipeline(session, principal, name)
    if yaml is not None:
        check_yaml(yaml, yaml_file or pipeline.yaml_file)
        pipeline.yaml = yaml
    if yaml_file is not None:
        pipeline.yaml_file = yaml_file
    if runtime is not None:
        pipeline.runtime_id = (await get_runtime(session, principal, runtime)).id
    if variables is not None or sealed_secrets is not None:
        new_variables = pipeline.variables if variables is None else variables
        new_secrets = pipeline.secrets if sealed_secrets is None else sealed_secrets
        check_variables(new_variables, new_secrets)
        pipeline.variables, pipeline.secrets = dict(new_variables), dict(new_secrets)
    pipeline.updated_at = now()
    return pipeline


async def _runtime(session: AsyncSession, principal: Principal, name: str | None) -> Runtime:
    if name:
        return await get_runtime(session, principal, name)
    return await default_runtime(session, principal)


async def find_pipeline(session: AsyncSession, principal: Principal, name: str) -> Pipeline | None:
    result: Pipeline | None = await session.scalar(
        select(Pipeline).where(Pipeline.account_id == principal.account_id, Pipeline.name == name)
    )
    return result


async def get_pipeline(session: AsyncSession, principal: Principal, name: str) -> Pipeline:
    pipeline = await find_pipeline(session, principal, name)
    if pipeline is None:
        raise NotFound(f"no pipeline {name!r} in this account")
    return pipeline


async def list_pipelines(session: AsyncSession, principal: Principal) -> list[Pipeline]:
    rows = await session.scalars(
        select(Pipeline).where(Pipeline.account_id == principal.account_id).order_by(Pipeline.name)
    )
    return list(rows)
