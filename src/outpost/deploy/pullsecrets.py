"""Image pull secrets for a deploy step's candidate: when its registry is a registry integration of the build and
the Deployment refers to no secret for that registry, one is created in the namespace (a dockerconfigjson Secret
named after the integration) for the pod template to reference."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from outpost.containers.auth import RegistryAuth
from outpost.containers.images import canonical_host

DOCKER_HUB = "https://index.docker.io/v1/"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"


def secret_name(auth: RegistryAuth) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", (auth.name or auth.domain).lower()).strip("-")[:50] or "registry"
    return f"outpost-registry-{slug}"


def config_key(image: str) -> str:
    """The key the kubelet looks the image's registry up by: the reference's own first part, or Docker Hub's."""
    first, slash, _ = image.partition("/")
    return first if slash and ("." in first or ":" in first or first == "localhost") else DOCKER_HUB


def secret(auth: RegistryAuth, image: str, namespace: str) -> dict[str, Any]:
    login = f"{auth.username or ''}:{auth.password or ''}"
    config = {"auths": {config_key(image): {"username": auth.username or "", "password": auth.password or "",
                                             "auth": base64.b64encode(login.encode()).decode()}}}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": {
            "name": secret_name(auth),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "outpost"},
        },
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def covers(found: dict[str, Any], domain: str) -> bool:
    """Whether a Secret holds registry credentials for `domain`."""
    if found.get("type") != SECRET_TYPE:
        return False
    try:
        config = json.loads(base64.b64decode((found.get("data") or {}).get(".dockerconfigjson", "")))
    except ValueError:
        return False
    keys = (config.get("auths") or {}).keys() if isinstance(config, dict) else ()
    wanted = canonical_host(domain)
    return any(canonical_host(_host(k)) == wanted for k in keys)


def _host(key: str) -> str:
    if key == DOCKER_HUB:
        return "docker.io"
    return re.sub(r"^https?://", "", key).split("/", 1)[0]
