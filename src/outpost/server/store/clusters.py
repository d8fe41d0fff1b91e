"""Kubernetes integrations (kind `cluster`): what fits one, which pipelines may use it, and what a build's runner
is handed to reach it.

An integration holds the API server's URL and CA, the namespace deploy steps act in, and one credential: a bearer
token or a client certificate's key, sealed in `secret`, or only the name of a runner secret. Its allow-list says
which pipelines' builds get it in `RunBuildTask.clusters`; it starts empty, so a new cluster is usable by no
pipeline until an account admin allows some (or all). Pipelines are kept by id, so a pipeline deleted and created
again under the same name is not allowed by the old entry. This module only reads and writes the database.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Invalid
from outpost.server.models import Build, Integration, Pipeline
from outpost.server.secrets import SecretBox
from outpost.wire import ClusterAccess

DEFAULT_NAMESPACE = "default"
MAX_ALLOWED = 500  # pipelines on one allow-list
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS-1123 label, as Kubernetes wants


def check_cluster(row: Integration, client_key: str | None = None) -> None:
    """Raises Invalid with the reason when a kubernetes integration's fields do not fit (`client_key` is the key
    in clear when one is being set)."""
    url = row.url
    if not url:
        raise Invalid("a kubernetes integration needs --server https://HOST[:PORT] (its API server)")
    parts = urllib.parse.urlsplit(url)
    if len(url) > 500 or any(c.isspace() for c in url) or parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid(f"the API server {url[:100]!r} must be https://HOST[:PORT] (http:// only for test clusters)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise Invalid(f"the API server {url[:100]!r} must not carry a user, a query or a fragment")
    if row.username:
        raise Invalid("a kubernetes integration takes a token or a client certificate, not a user name")
    if row.domain:
        raise Invalid("a kubernetes integration has a server URL, not a domain")
    if row.namespace is not None and not _NAMESPACE.match(row.namespace):
        raise Invalid(f"namespace {row.namespace!r} must be a DNS label: lowercase letters, digits and '-'")
    if row.ca_pem is not None:
        _check_certificates(row.ca_pem, "the CA")
    if row.client_cert_pem is not None:
        if row.runner_secret:
            raise Invalid("a runner secret holds a bearer token: give it without a client certificate")
        if not row.secret:
            raise Invalid("a client certificate needs its key (--client-key, or the kubeconfig's client-key-data)")
        _check_certificates(row.client_cert_pem, "the client certificate")
    if client_key is not None:
        if row.client_cert_pem is None:
            raise Invalid("a client key needs its certificate")
        try:
            serialization.load_pem_private_key(client_key.encode(), password=None)
        except (ValueError, TypeError, UnicodeError):
            raise Invalid("the client key is not an unencrypted PEM private key") from None
    if len(row.allowed_pipelines) > MAX_ALLOWED:
        raise Invalid(f"an allow-list names at most {MAX_ALLOWED} pipelines (or allow all of them)")


def check_not_cluster(row: Integration) -> None:
    """Fields only a kubernetes integration has."""
    if row.namespace or row.ca_pem or row.client_cert_pem:
        raise Invalid(f"a namespace, a CA and a client certificate are for kubernetes integrations, not {row.kind}")
    if row.allowed_pipelines or row.all_pipelines:
        raise Invalid(f"allow-lists are for kubernetes integrations; a {row.kind} integration serves every pipeline")


def _check_certificates(pem: str, what: str) -> None:
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except (ValueError, UnicodeError):
        raise Invalid(f"{what} is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None


async def pipeline_ids(session: AsyncSession, account_id: str, names: list[str]) -> list[str]:
    """The ids of the account's pipelines by name, in the order given; Invalid names the ones that do not exist."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not wanted:
        return []
    rows = await session.execute(
        select(Pipeline.name, Pipeline.id).where(Pipeline.account_id == account_id, Pipeline.name.in_(wanted))
    )
    found: dict[str, str] = {name: id_ for name, id_ in rows}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise Invalid(f"no pipeline {', '.join(repr(n) for n in missing)} in this account", field="allowed_pipelines")
    return [found[n] for n in wanted]


async def pipeline_names(session: AsyncSession, account_id: str) -> dict[str, str]:
    """Id → name of the account's pipelines: allow-lists are shown by name."""
    rows = await session.execute(select(Pipeline.id, Pipeline.name).where(Pipeline.account_id == account_id))
    return {id_: name for id_, name in rows}


def allowed_names(row: Integration, names: dict[str, str]) -> list[str]:
    """The allow-list by name, sorted; a deleted pipeline's id drops out."""
    return sorted(names[i] for i in row.allowed_pipelines if i in names)


def may_use(row: Integration, pipeline_id: str | None) -> bool:
    return row.all_pipelines or (pipeline_id is not None and pipeline_id in row.allowed_pipelines)


def cluster_access(integration: Integration, box: SecretBox) -> ClusterAccess:
    """What a runner needs to reach a kubernetes integration: the credential opened, or only its runner secret's
    name."""
    assert integration.kind == "cluster"
    assert integration.url is not None
    opened = box.open(integration.secret) if integration.secret else None
    with_cert = integration.client_cert_pem is not None
    return ClusterAccess(
        name=integration.name,
        server=integration.url,
        ca_pem=integration.ca_pem,
        token=None if with_cert else opened,
        client_cert_pem=integration.client_cert_pem,
        client_key_pem=opened if with_cert else None,
        runner_secret=integration.runner_secret,
        namespace=integration.namespace or DEFAULT_NAMESPACE,
        insecure=integration.insecure,
        behind_firewall=integration.behind_firewall,
    )


async def cluster_access_for_build(
    session: AsyncSession, box: SecretBox, build: Build, *, rows: Sequence[Integration] | None = None
) -> dict[str, ClusterAccess]:
    """The kubernetes integrations the build's pipeline is allowed to use, by name, and no other: its deploy steps
    and its steps' KUBECONFIG get only these. Nothing is contacted. `rows`: the account's integrations, if the
    caller read them already."""
    return {
        row.name: cluster_access(row, box)
        for row in await _clusters(session, build, rows)
        if may_use(row, build.pipeline_id)
    }


async def clusters_refused_to_build(
    session: AsyncSession, build: Build, *, rows: Sequence[Integration] | None = None
) -> list[str]:
    """The names of the account's kubernetes integrations the build's pipeline may not use: the runner names the
    reason when a deploy step asks for one of them."""
    return [row.name for row in await _clusters(session, build, rows) if not may_use(row, build.pipeline_id)]


async def _clusters(session: AsyncSession, build: Build, rows: Sequence[Integration] | None) -> list[Integration]:
    if rows is not None:
        return sorted((row for row in rows if row.kind == "cluster"), key=lambda row: row.name)
    query = select(Integration).where(Integration.account_id == build.account_id, Integration.kind == "cluster")
    return list(await session.scalars(query.order_by(Integration.name)))
