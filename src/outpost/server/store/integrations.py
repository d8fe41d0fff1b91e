"""Integrations: the Git providers, registries and clusters an account's pipelines use.

A password or token is sealed by the server's SecretBox and never leaves the control plane through the API.
With `runner_secret` the credential lives only on the runners, under that name, and the control plane has none.
The control plane never connects to an integration marked `behind_firewall` (`server/connections.py` refuses to
test one), and everything that needs one (clones, YAML from the repository, git queries, pulls and pushes)
happens on a runner. This module only reads and writes the database.
A build's task carries the git and registry integrations it may use (`git_access_for_build`,
`registry_access_for_build`), opened for its runner; kubernetes integrations and their allow-lists are in
`store/clusters.py`. A claim reads the account's integrations once (`of_build_account`) and hands the rows to each.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.containers.images import canonical_host
from outpost.containers.registries import References, references
from outpost.errors import Conflict, Invalid, NotFound, PipelineError
from outpost.pipelines.parsing import load_pipeline
from outpost.pipelines.variables import substitute
from outpost.server.models import Build, Integration
from outpost.server.secrets import SecretBox
from outpost.server.security import new_id, now
from outpost.server.store import audit, clusters
from outpost.server.store.accounts import Principal
from outpost.server.store.runtimes import check_name
from outpost.wire import GitAccess, RegistryAccess

KINDS = ("git", "registry", "cluster")
PROVIDERS: dict[str, tuple[str, ...]] = {
    "git": ("github", "github-enterprise", "gitlab", "bitbucket-server", "git"),
    "registry": ("docker-registry",),
    "cluster": ("kubernetes",),
}
MAX_TAGS = 20
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,49}$")
_RUNNER_SECRET = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?$")
_SCP_LIKE = re.compile(r"^[^@/:\s]+@[^@/:\s]+:.*$")
BEHIND_FIREWALL = (
    "integration {name!r} is behind the firewall: the control plane cannot reach integrations behind the "
    "firewall; a runner of the runtime can (run a build or a git query there instead)"
)
_UNSET: Any = object()


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise Invalid(f"integration kind {kind!r} is not one of {', '.join(KINDS)}")


async def create_integration(
    session: AsyncSession,
    principal: Principal,
    box: SecretBox,
    *,
    kind: str,
    name: str,
    provider: str | None = None,
    url: str | None = None,
    domain: str | None = None,
    username: str | None = None,
    secret: str | None = None,
    runner_secret: str | None = None,
    behind_firewall: bool = False,
    is_default: bool = False,
    insecure: bool = False,
    tags: list[str] | None = None,
    namespace: str | None = None,
    ca_pem: str | None = None,
    client_cert_pem: str | None = None,
    client_key: str | None = None,
    allowed_pipelines: list[str] | None = None,
    all_pipelines: bool = False,
) -> Integration:
    """`secret` is the password or token in clear; it is stored sealed (for a cluster with a client certificate,
    `client_key` is, instead of a token). `allowed_pipelines` are names. The first integration of a kind becomes
    the default one."""
    check_kind(kind)
    check_name("integration", name)
    if await find_integration(session, principal.account_id, kind, name) is not None:
        raise Conflict(f"{kind} integration {name!r} already exists")
    if secret and client_key:
        raise Invalid("give a token or a client certificate and key, not both")
    t = now()
    row = Integration(
        id=new_id(),
        account_id=principal.account_id,
        kind=kind,
        name=name,
        provider=provider or PROVIDERS[kind][0],
        url=url,
        domain=domain,
        username=username or None,
        secret=box.seal(secret) if secret else (box.seal(client_key) if client_key else None),
        runner_secret=runner_secret or None,
        behind_firewall=behind_firewall,
        is_default=False,
        insecure=insecure,
        tags=list(tags or []),
        created_at=t,
        updated_at=t,
        namespace=namespace or None,
        ca_pem=ca_pem or None,
        client_cert_pem=client_cert_pem or None,
        allowed_pipelines=await clusters.pipeline_ids(session, principal.account_id, allowed_pipelines or []),
        all_pipelines=all_pipelines,
    )
    _check(row, client_key)
    if is_default or await default_integration(session, principal.account_id, kind) is None:
        await _make_default(session, row)
    session.add(row)
    await session.flush()
    await audit.record(session, principal, "integration.create", f"{kind} {name}")
    if row.allowed_pipelines or row.all_pipelines:
        await _audit_allow_list(session, principal, row)
    return row


async def update_integration(
    session: AsyncSession,
    principal: Principal,
    box: SecretBox,
    kind: str,
    name: str,
    *,
    provider: str = _UNSET,
    url: str | None = _UNSET,
    domain: str | None = _UNSET,
    username: str | None = _UNSET,
    secret: str | None = _UNSET,
    runner_secret: str | None = _UNSET,
    behind_firewall: bool | None = None,
    is_default: bool | None = None,
    insecure: bool | None = None,
    tags: list[str] | None = None,
    namespace: str | None = _UNSET,
    ca_pem: str | None = _UNSET,
    client_cert_pem: str | None = _UNSET,
    client_key: str | None = _UNSET,
    allowed_pipelines: list[str] | None = None,
    all_pipelines: bool | None = None,
) -> Integration:
    """Changes only what is given. A new `secret` replaces a `runner_secret` and the other way round;
    None for either removes it. For a cluster, a token drops the client certificate, and a certificate comes
    with its key (`client_key`, sealed in `secret`). `allowed_pipelines` (names) replaces the allow-list."""
    row = await get_integration(session, principal, kind, name)
    allow_list = (list(row.allowed_pipelines), row.all_pipelines)
    for field, value in (("namespace", namespace), ("ca_pem", ca_pem), ("client_cert_pem", client_cert_pem)):
        if value is not _UNSET:
            setattr(row, field, value or None)
    if client_key is not _UNSET and secret is not _UNSET and secret and client_key:
        raise Invalid("give a token or a client certificate and key, not both")
    if secret is not _UNSET and secret:
        row.client_cert_pem = None
    if allowed_pipelines is not None:
        row.allowed_pipelines = await clusters.pipeline_ids(session, principal.account_id, allowed_pipelines)
    if all_pipelines is not None:
        row.all_pipelines = all_pipelines
    if provider is not _UNSET:
        row.provider = provider
    for field, value in (("url", url), ("domain", domain), ("username", username)):
        if value is not _UNSET:
            setattr(row, field, value or None)
    if secret is not _UNSET:
        row.secret = box.seal(secret) if secret else None
        if secret:
            row.runner_secret = None
    if runner_secret is not _UNSET:
        row.runner_secret = runner_secret or None
        if runner_secret:
            row.secret = None
            row.client_cert_pem = None
    if client_key is not _UNSET:
        row.secret = box.seal(client_key) if client_key else None
        if client_key:
            row.runner_secret = None
    if behind_firewall is not None:
        row.behind_firewall = behind_firewall
    if insecure is not None:
        row.insecure = insecure
    if tags is not None:
        row.tags = list(tags)
    _check(row, None if client_key is _UNSET else client_key)
    if is_default:
        await _make_default(session, row)
    row.updated_at = now()
    await session.flush()
    await audit.record(session, principal, "integration.update", f"{kind} {name}")
    if (list(row.allowed_pipelines), row.all_pipelines) != allow_list:
        await _audit_allow_list(session, principal, row)
    return row


async def _audit_allow_list(session: AsyncSession, principal: Principal, row: Integration) -> None:
    """Who may deploy where is a security decision: the allow-list as it now stands, by name."""
    names = clusters.allowed_names(row, await clusters.pipeline_names(session, principal.account_id))
    await audit.record(
        session,
        principal,
        "integration.allow",
        f"{row.kind} {row.name}",
        all_pipelines=row.all_pipelines,
        pipelines=names,
    )


async def delete_integration(session: AsyncSession, principal: Principal, kind: str, name: str) -> None:
    """Removes it; if it was the default of its kind, the oldest one left becomes the default."""
    row = await get_integration(session, principal, kind, name)
    await session.delete(row)
    await session.flush()
    await audit.record(session, principal, "integration.delete", f"{kind} {name}")
    if row.is_default:
        heir = await session.scalar(
            select(Integration)
            .where(Integration.account_id == principal.account_id, Integration.kind == kind)
            .order_by(Integration.created_at, Integration.id)
            .limit(1)
        )
        if heir is not None:
            heir.is_default = True


async def find_integration(session: AsyncSession, account_id: str, kind: str, name: str) -> Integration | None:
    result: Integration | None = await session.scalar(
        select(Integration).where(
            Integration.account_id == account_id, Integration.kind == kind, Integration.name == name
        )
    )
    return result


async def get_integration(session: AsyncSession, principal: Principal, kind: str, name: str) -> Integration:
    check_kind(kind)
    row = await find_integration(session, principal.account_id, kind, name)
    if row is None:
        raise NotFound(f"no {kind} integration {name!r} in this account")
    return row


async def default_integration(session: AsyncSession, account_id: str, kind: str) -> Integration | None:
    result: Integration | None = await session.scalar(
        select(Integration).where(
            Integration.account_id == account_id, Integration.kind == kind, Integration.is_default.is_(True)
        )
    )
    return result


async def list_integrations(session: AsyncSession, principal: Principal, kind: str | None = None) -> list[Integration]:
    query = select(Integration).where(Integration.account_id == principal.account_id)
    if kind is not None:
        check_kind(kind)
        query = query.where(Integration.kind == kind)
    return list(await session.scalars(query.order_by(Integration.kind, Integration.name)))


def git_access(integration: Integration, box: SecretBox) -> GitAccess:
    """What a runner needs to reach a git integration: the credential opened, or only its runner secret's name."""
    assert integration.kind == "git"
    assert integration.url is not None
    return GitAccess(
        name=integration.name,
        provider=integration.provider,
        url=integration.url,
        username=integration.username,
        password=box.open(integration.secret) if integration.secret else None,
        runner_secret=integration.runner_secret,
        is_default=integration.is_default,
        behind_firewall=integration.behind_firewall,
    )


async def of_build_account(session: AsyncSession, build: Build) -> list[Integration]:
    """Every integration of the build's account, by name: one query for all that a claim hands over (the
    `*_for_build` functions take them as `rows`)."""
    return list(await session.scalars(_OF_ACCOUNT, {"account_id": build.account_id}))


# Built once: every claim reads them (building the statement each time was ~16 % of a claiming poll's samples).
_OF_ACCOUNT = select(Integration).where(Integration.account_id == bindparam("account_id")).order_by(Integration.name)


async def _of_kind(
    session: AsyncSession, build: Build, kind: str, rows: Sequence[Integration] | None
) -> list[Integration]:
    if rows is not None:
        return [row for row in rows if row.kind == kind]
    query = select(Integration).where(Integration.account_id == build.account_id, Integration.kind == kind)
    return list(await session.scalars(query.order_by(Integration.name)))


async def git_access_for_build(
    session: AsyncSession, box: SecretBox, build: Build, *, rows: Sequence[Integration] | None = None
) -> dict[str, GitAccess]:
    """The git integrations a build may use, by name: those its git-clone steps name (after substituting the
    build's variables), the default one when a step names none, and the one its YAML is read through. `rows`: the
    account's integrations, if the caller read them already.

    YAML from the repository is not known yet when the build is handed out: such a build gets the pipeline's
    integration and the default one. Only names are resolved here; nothing is contacted."""
    candidates = await _of_kind(session, build, "git", rows)
    if not candidates:
        return {}  # nothing to hand over: no need to parse the YAML for the names it uses
    names: set[str] = set()
    wants_default = False
    if build.yaml_repo is not None:
        wants_default = True
        if build.yaml_git:
            names.add(build.yaml_git)
    if build.yaml:
        try:
            steps = load_pipeline(build.yaml, build.yaml_file).all_steps()
        except PipelineError:
            steps = []  # the runner reports the problems
        variables = {str(k): str(v) for k, v in build.variables.items()}
        for step in steps:
            if step.type != "git-clone":
                continue
            named = step.fields.get("git")
            if named is None or str(named).strip() == "":
                wants_default = True
            else:
                names.add(substitute(str(named), variables).strip())
    found: dict[str, GitAccess] = {}
    for row in candidates:
        if row.name in names or (wants_default and row.is_default):
            found[row.name] = git_access(row, box)
    return found


def registry_access(integration: Integration, box: SecretBox) -> RegistryAccess:
    """What a runner needs to log in to a registry integration: the password opened, or only its runner secret's
    name."""
    assert integration.kind == "registry"
    assert integration.domain is not None
    return RegistryAccess(
        name=integration.name,
        domain=integration.domain,
        username=integration.username,
        password=box.open(integration.secret) if integration.secret else None,
        runner_secret=integration.runner_secret,
        insecure=integration.insecure,
        is_default=integration.is_default,
        behind_firewall=integration.behind_firewall,
    )


async def registry_access_for_build(
    session: AsyncSession, box: SecretBox, build: Build, *, rows: Sequence[Integration] | None = None
) -> dict[str, RegistryAccess]:
    """The registry integrations a build may use, by name: the default one, those its YAML names (`registry`,
    `registry_context`, `registry_contexts`) and those whose domain an image of its YAML lives in, after
    substituting the build's variables and secrets (see `containers.registries.references`).

    YAML from the repository is not known yet when the build is handed out: such a build gets every registry
    integration of its account (the runner needs them to pull and push; they are the account's own). Only names
    and domains are compared here; nothing is contacted."""
    found = await _of_kind(session, build, "registry", rows)
    if build.yaml_repo is None and found:
        wanted = _registry_references(box, build)
        found = [
            row
            for row in found
            if row.is_default or row.name in wanted.names or canonical_host(row.domain or "") in wanted.domains
        ]
    return {row.name: registry_access(row, box) for row in found}


def _registry_references(box: SecretBox, build: Build) -> References:
    try:
        pipeline = load_pipeline(build.yaml, build.yaml_file)
    except PipelineError:
        return References()  # the runner reports the problems
    variables = {str(k): str(v) for k, v in build.variables.items()}
    return references(pipeline, {**variables, **box.open_all(build.secrets)})


async def _make_default(session: AsyncSession, row: Integration) -> None:
    current = await session.scalars(
        select(Integration).where(
            Integration.account_id == row.account_id,
            Integration.kind == row.kind,
            Integration.is_default.is_(True),
            Integration.id != row.id,
        )
    )
    for other in current:
        other.is_default = False
    row.is_default = True


def _check(row: Integration, client_key: str | None = None) -> None:
    """Raises Invalid with the reason when the integration's fields do not fit its kind."""
    if row.provider not in PROVIDERS[row.kind]:
        raise Invalid(
            f"a {row.kind} integration's provider is one of {', '.join(PROVIDERS[row.kind])}, not {row.provider!r}"
        )
    if row.secret and row.runner_secret:
        raise Invalid("give either a password/token or a runner secret, not both")
    if row.runner_secret and not _RUNNER_SECRET.match(row.runner_secret):
        raise Invalid(f"runner secret name {row.runner_secret!r} must be letters, digits, '_', '.' or '-'")
    if len(row.tags) > MAX_TAGS:
        raise Invalid(f"an integration has at most {MAX_TAGS} tags")
    for tag in row.tags:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise Invalid(f"tag {tag!r} must be 1-50 letters, digits, '_', '.', ':', '/' or '-'")
    if row.username is not None and len(row.username) > 255:
        raise Invalid("the user name is longer than 255 characters")
    if row.kind == "cluster":
        clusters.check_cluster(row, client_key)
        return
    clusters.check_not_cluster(row)
    if row.kind == "registry":
        if not row.domain or not _DOMAIN.match(row.domain):
            raise Invalid(f"a registry integration needs --domain HOST[:PORT] (no scheme), not {row.domain!r}")
        if row.url:
            raise Invalid("a registry integration has a domain, not a URL")
        return
    if row.domain:
        raise Invalid(f"a {row.kind} integration has a URL, not a domain")
    if row.insecure and row.kind == "git":
        raise Invalid("--insecure is for registries")
    _check_url(row.kind, row.url)


def _check_url(kind: str, url: str | None) -> None:
    if not url:
        raise Invalid(f"a {kind} integration needs a URL")
    if len(url) > 500 or any(c.isspace() for c in url):
        raise Invalid(f"the URL {url[:100]!r} is too long or contains spaces")
    if kind == "git" and _SCP_LIKE.match(url):
        return
    parts = urllib.parse.urlsplit(url)
    schemes = ("https", "http", "ssh", "git") if kind == "git" else ("https", "http")
    if parts.scheme not in schemes or not parts.hostname:
        raise Invalid(f"the URL {url!r} must start with {' or '.join(s + '://' for s in schemes)} and name a host")
    if parts.password is not None or (parts.username and parts.scheme in ("http", "https")):
        raise Invalid("put the user name and password in --username and --password/--token, not in the URL")
    if parts.query or parts.fragment:
        raise Invalid(f"the URL {url!r} must not have a query or a fragment")
