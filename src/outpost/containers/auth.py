"""Registry credentials as the runner uses them, whichever tool pulls or pushes."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegistryAuth:
    """How to log in to one registry. `domain` is HOST[:PORT] as written in image references; `insecure` means
    plain HTTP (or unverified TLS): an internal registry without a certificate."""

    domain: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    name: str = ""  # the integration's name, for messages

    def docker_header(self) -> str:
        """The X-Registry-Auth header value the Docker Engine API wants (base64url of a JSON object)."""
        payload = {"username": self.username or "", "password": self.password or "", "serveraddress": self.domain}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
