"""Integrations: Git providers, registries, clusters, and testing a connection (docs/git.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from outpost.server import models
from outpost.server.api.schemas.base import In, Out, Time
from outpost.server.store import clusters

Tags = list[Annotated[str, Field(min_length=1, max_length=50)]]
PipelineNames = list[Annotated[str, Field(min_length=1, max_length=150)]]
Pem = Annotated[str, Field(max_length=64_000)]


class IntegrationIn(In):
    """`password` or `token` (the same thing to git: one credential), or `runner_secret`: the name of a secret
    kept only on the runners, so that the control plane holds no credential at all.

    A kubernetes integration (kind `cluster`): `url` is the API server, `token` a service account's bearer token
    or `client_cert_pem` + `client_key_pem`, `ca_pem` the cluster's CA, and `allowed_pipelines` (names) or
    `all_pipelines` the pipelines that may use it (none by default)."""

    kind: str = Field(max_length=20)
    name: str = Field(min_length=1, max_length=100)
    provider: str | None = Field(default=None, max_length=30)
    url: str | None = Field(default=None, max_length=500)
    domain: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=10_000)
    token: str | None = Field(default=None, max_length=10_000)
    runner_secret: str | None = Field(default=None, max_length=255)
    behind_firewall: bool = False
    default: bool = False
    insecure: bool = False
    tags: Tags = Field(default_factory=list, max_length=20)
    namespace: str | None = Field(default=None, max_length=253)
    ca_pem: Pem | None = None
    client_cert_pem: Pem | None = None
    client_key_pem: Pem | None = None
    allowed_pipelines: PipelineNames = Field(default_factory=list, max_length=500)
    all_pipelines: bool = False


class IntegrationPatch(In):
    """Only the fields given change; `null` or "" clears an optional one."""

    provider: str | None = Field(default=None, max_length=30)
    url: str | None = Field(default=None, max_length=500)
    domain: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=10_000)
    token: str | None = Field(default=None, max_length=10_000)
    runner_secret: str | None = Field(default=None, max_length=255)
    behind_firewall: bool | None = None
    default: bool | None = None
    insecure: bool | None = None
    tags: Tags | None = Field(default=None, max_length=20)
    namespace: str | None = Field(default=None, max_length=253)
    ca_pem: Pem | None = None
    client_cert_pem: Pem | None = None
    client_key_pem: Pem | None = None
    allowed_pipelines: PipelineNames | None = Field(default=None, max_length=500)  # replaces the allow-list
    all_pipelines: bool | None = None


class IntegrationOut(Out):
    id: str
    kind: str
    name: str
    provider: str
    url: str | None
    domain: str | None
    username: str | None
    has_secret: bool  # a password or token is stored (sealed); it is never shown
    runner_secret: str | None
    behind_firewall: bool
    default: bool = Field(validation_alias="is_default")
    insecure: bool
    tags: list[str]
    created_at: Time
    updated_at: Time
    # Kubernetes only (None or empty for the other kinds):
    namespace: str | None = None
    has_ca: bool = False  # the cluster's own CA is set (else the system's trust store)
    credential: str | None = None  # token | client-certificate | runner-secret | None; never the value
    allowed_pipelines: list[str] = Field(default_factory=list)  # names of the pipelines that may use it
    all_pipelines: bool = False

    @classmethod
    def of(
        cls, i: models.Integration, pipelines: dict[str, str] | None = None, *, names_only: bool = False
    ) -> IntegrationOut:
        """`pipelines` (id → name) shows a cluster's allow-list. `names_only`: a viewer sees a cluster's name and
        whether it is behind the firewall, not where it is nor who may use it."""
        if i.kind != "cluster":
            return cls.read(i, has_secret=i.secret is not None)
        if names_only:
            hidden: dict[str, object] = {
                "url": None,
                "username": None,
                "runner_secret": None,
                "namespace": None,
                "tags": [],
            }
            return cls.read(i, **hidden, has_secret=False, insecure=False, allowed_pipelines=[], all_pipelines=False)
        credential = (
            "runner-secret"
            if i.runner_secret
            else ("client-certificate" if i.client_cert_pem else ("token" if i.secret else None))
        )
        return cls.read(
            i,
            has_secret=i.secret is not None,
            namespace=i.namespace or clusters.DEFAULT_NAMESPACE,
            has_ca=i.ca_pem is not None,
            credential=credential,
            allowed_pipelines=clusters.allowed_names(i, pipelines or {}),
            all_pipelines=i.all_pipelines,
        )


class ConnectionOut(BaseModel):
    ok: bool
    message: str


class ClusterCheckOut(ConnectionOut):
    """A kubernetes integration's connection test, made by a runner."""

    version: str | None = None  # the API server's gitVersion, e.g. v1.30.2
    platform: str | None = None
    runner: str | None = None  # the runner that asked
