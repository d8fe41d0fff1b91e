"""Reading a kubeconfig: one context's server, CA, namespace and credential (a bearer token or a client certificate
and key), as a kubernetes integration stores them. Used by `outpost integration add kubernetes --kubeconfig FILE`
(on the CLI's side) and by the web UI's form (a pasted kubeconfig). A credential Outpost cannot keep and replay from
a runner (an exec plugin, an auth provider, a user name and password) is refused with what to use instead. Pure:
it reads files only where the kubeconfig names them, and only when given its folder."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from outpost.errors import OutpostError


class KubeconfigError(OutpostError):
    """The file, its context or its credential cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ClusterSettings:
    server: str
    namespace: str | None = None
    ca_pem: str | None = None
    token: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    insecure: bool = False


USE_INSTEAD = (
    "Outpost needs a credential a runner can replay: give the integration a service account token "
    "(kubectl create token NAME --duration=...) with --token-file, or a client certificate"
)


def read(path: Path, context: str | None = None) -> ClusterSettings:
    """The settings of `context` (default: the file's current-context); files it names are read relative to it."""
    try:
        text = path.read_text()
    except (OSError, UnicodeError) as exc:
        raise KubeconfigError(f"cannot read the kubeconfig {path}: {exc}") from None
    return parse(text, context, path.parent, shown=str(path))


def parse(
    text: str, context: str | None = None, base: Path | None = None, *, shown: str = "the kubeconfig"
) -> ClusterSettings:
    """As `read`, from the text; without `base`, a field that names a file is refused (paste a flattened one)."""
    path = shown
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The place and the problem only: PyYAML's message quotes the line, which may be the token's.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', '')})" if mark else ""
        raise KubeconfigError(f"{path} is not YAML{where}") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"{path} is not a kubeconfig (no clusters, contexts and users)")
    name = context or config.get("current-context")
    if not name:
        raise KubeconfigError(f"{path} has no current-context: name the context to use")
    ctx = _named(config, "contexts", "context", str(name), path)
    cluster = _named(config, "clusters", "cluster", str(ctx.get("cluster", "")), path)
    user = _named(config, "users", "user", str(ctx["user"]), path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"the cluster of context {name!r} in {path} has no server")
    for refused, what in (("exec", "an exec plugin"), ("auth-provider", "an auth provider")):
        if user.get(refused):
            command = user[refused].get("command", "") if isinstance(user[refused], dict) else ""
            shown = f" ({command})" if command else ""
            raise KubeconfigError(f"the user of context {name!r} logs in through {what}{shown}. {USE_INSTEAD}")
    if user.get("username") or user.get("password"):
        raise KubeconfigError(f"the user of context {name!r} logs in with a user name and password. {USE_INSTEAD}")
    token = user.get("token") or _file(user.get("tokenFile"), base, "tokenFile")
    cert = _data(user, "client-certificate", base)
    key = _data(user, "client-key", base)
    if bool(cert) != bool(key):
        raise KubeconfigError(f"the user of context {name!r} has a client certificate without its key, or a key alone")
    namespace = ctx.get("namespace")
    return ClusterSettings(
        server=server,
        namespace=str(namespace) if namespace else None,
        ca_pem=_data(cluster, "certificate-authority", base),
        token=token.strip() if isinstance(token, str) and token.strip() else None,
        client_cert_pem=cert,
        client_key_pem=key,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def _named(config: dict[str, Any], section: str, key: str, name: str, path: str) -> dict[str, Any]:
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise KubeconfigError(f"{path}: {section} is not a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            found = entry.get(key) or {}
            if not isinstance(found, dict):
                raise KubeconfigError(f"{path}: {key} {name!r} is not a mapping")
            return found
    known = ", ".join(str(e.get("name")) for e in entries if isinstance(e, dict)) or "none"
    raise KubeconfigError(f"{path} has no {key} {name!r} (its {section}: {known})")


def _data(entry: dict[str, Any], field: str, base: Path | None) -> str | None:
    """`FIELD-data` (base64 PEM) or `FIELD` (a file, relative to the kubeconfig's folder), as text."""
    encoded = entry.get(f"{field}-data")
    if encoded:
        try:
            return base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeError):
            raise KubeconfigError(f"{field}-data is not base64 of a PEM file") from None
    return _file(entry.get(field), base, field)


def _file(name: object, base: Path | None, field: str) -> str | None:
    if not name:
        return None
    if base is None:
        raise KubeconfigError(
            f"{field} names a file ({name}): give a kubeconfig that holds the data itself "
            "(kubectl config view --raw --minify --flatten)"
        )
    where = Path(str(name)).expanduser()
    try:
        return (where if where.is_absolute() else base / where).read_text()
    except (OSError, UnicodeError) as exc:
        raise KubeconfigError(f"cannot read {field} {name}: {exc}") from None
