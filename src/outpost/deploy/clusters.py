"""A Kubernetes integration as the runner reaches it: a `ClusterAccess` (from the task) made into a lightkube client
for the deploy step, or into a kubeconfig for the tools a freestyle step runs (kubectl, helm).

The credential is the integration's own service account (a bearer token or a client certificate), never the runner's;
a token kept as a runner-side secret (`runner_secret`) is looked up in the runner's `--secrets-file`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from outpost.errors import ExecutorError
from outpost.wire import ClusterAccess

if TYPE_CHECKING:
    from lightkube import AsyncClient

FIELD_MANAGER = "outpost"


class ClusterError(ExecutorError):
    """A step cannot use a Kubernetes integration (unknown to the build, a runner secret missing, the API refused or
    could not be reached); the message names the integration and never holds a credential."""


def pick(clusters: Mapping[str, ClusterAccess], name: str) -> ClusterAccess:
    """The integration a step names; ClusterError when the build was not given it."""
    if name in clusters:
        return clusters[name]
    known = ", ".join(sorted(clusters)) or "none"
    raise ClusterError(
        f"cluster {name!r} is not available to this build (its clusters: {known}): add it with `outpost integration "
        f"add kubernetes {name} ...` and allow this pipeline to use it"
    )


def refusal(clusters: Mapping[str, ClusterAccess], refused: Iterable[str], name: str, pipeline: str) -> str | None:
    """Why a deploy step naming `name` cannot run in this build (checked at build start, before any step), or
    None: the account's admin has not allowed the pipeline to use that integration, or there is none of that name
    (the control plane sends the names of the integrations the pipeline may not use in `refused`)."""
    if name in clusters:
        return None
    if name in set(refused):
        return (
            f"pipeline {pipeline!r} is not allowed to use kubernetes integration {name!r}: an account admin can "
            f"allow it (outpost integration update {name} --allow-pipeline {pipeline})"
        )
    return f"there is no kubernetes integration {name!r} in this account (outpost integration list --kind cluster)"


def token(access: ClusterAccess, runner_secrets: Mapping[str, str]) -> str | None:
    """The bearer token, from the task or from the runner's own secrets."""
    if access.runner_secret:
        if access.runner_secret not in runner_secrets:
            raise ClusterError(
                f"kubernetes integration {access.name!r} keeps its token in runner secret {access.runner_secret!r}, "
                "which this runner does not have: add it to the file given by --secrets-file and restart the runner"
            )
        return runner_secrets[access.runner_secret].strip()
    return access.token


def secret_values(clusters: Iterable[ClusterAccess], runner_secrets: Mapping[str, str]) -> set[str]:
    """Every credential of these integrations this runner can use, to be masked in the build's logs."""
    found: set[str] = set()
    for access in clusters:
        found.update(v for v in (access.token, access.client_key_pem) if v)
        if access.runner_secret and access.runner_secret in runner_secrets:
            found.add(runner_secrets[access.runner_secret].strip())
    return found


def kubeconfig(
    clusters: Mapping[str, ClusterAccess], runner_secrets: Mapping[str, str], current: str | None = None
) -> dict[str, Any]:
    """A kubeconfig with one context per integration, named after it (cluster and user of the same name, the
    integration's namespace), `current` (or the first) as current-context. Integrations whose runner secret this
    runner lacks are left out."""
    entries: dict[str, list[dict[str, Any]]] = {"clusters": [], "users": [], "contexts": []}
    for name, access in clusters.items():
        try:
            bearer = token(access, runner_secrets)
        except ClusterError:
            continue
        cluster: dict[str, Any] = {"server": access.server}
        if access.ca_pem:
            cluster["certificate-authority-data"] = _b64(access.ca_pem)
        if access.insecure:
            cluster["insecure-skip-tls-verify"] = True
        user: dict[str, Any] = {}
        if bearer:
            user["token"] = bearer
        if access.client_cert_pem and access.client_key_pem:
            user["client-certificate-data"] = _b64(access.client_cert_pem)
            user["client-key-data"] = _b64(access.client_key_pem)
        entries["clusters"].append({"name": name, "cluster": cluster})
        entries["users"].append({"name": name, "user": user})
        entries["contexts"].append(
            {"name": name, "context": {"cluster": name, "user": name, "namespace": access.namespace}}
        )
    names = [c["name"] for c in entries["contexts"]]
    chosen = current if current in names else (names[0] if names else "")
    return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": chosen, **entries}


def client(access: ClusterAccess, runner_secrets: Mapping[str, str], namespace: str | None = None) -> AsyncClient:
    """A lightkube client of the integration, acting in `namespace` (default: the integration's)."""
    try:
        from lightkube import AsyncClient, KubeConfig
    except ImportError as exc:  # pragma: no cover - the dependency is declared; a trimmed install says what to add
        raise ClusterError(f"deploy steps need lightkube ({exc}): pip install 'outpost-ci[kubernetes]'") from None
    token(access, runner_secrets)  # a runner secret this runner lacks is named
    config = KubeConfig.from_dict(kubeconfig({access.name: access}, runner_secrets, access.name))
    single = config.get(access.name)
    assert single is not None  # the one context, made above
    return AsyncClient(single, namespace=namespace or access.namespace, field_manager=FIELD_MANAGER)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
