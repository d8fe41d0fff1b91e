"""Test connection: a bounded check, from the control plane, that an integration answers with its credential
(git: `git ls-remote`; registry: GET /v2/). Never for an integration behind the firewall, nor for one whose
credential only the runners hold, nor for a cluster (a runner tests those: `api/gitqueries.py`). The only place
the control plane itself talks to an integration; the store only reads the row."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

import httpx

from outpost.errors import Conflict
from outpost.git.remote import GitRemoteError, Remote, ls_remote
from outpost.server.models import Integration
from outpost.server.secrets import SecretBox
from outpost.server.store.integrations import BEHIND_FIREWALL

CHECK_TIMEOUT = 10.0  # seconds a connection test may take


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str


async def test_connection(integration: Integration, box: SecretBox) -> ConnectionCheck:
    """A bounded check from the control plane (git: `git ls-remote`; registry: GET /v2/), never for an
    integration behind the firewall (Conflict). Call it outside a transaction: it may take CHECK_TIMEOUT."""
    if integration.behind_firewall:
        raise Conflict(BEHIND_FIREWALL.format(name=integration.name), error="behind_firewall")
    if integration.kind == "cluster":  # deploy steps reach it from the runners: that is where it must answer
        raise Conflict(
            f"kubernetes integration {integration.name!r} is tested by a runner, where deploy steps reach it: "
            f"outpost integration test {integration.name} (POST /api/v1/integrations/cluster/NAME/check)",
            error="tested_by_runner",
        )
    if integration.runner_secret:
        raise Conflict(
            f"the credential of integration {integration.name!r} is kept only on the runners "
            f"(runner secret {integration.runner_secret!r}): the control plane cannot test it",
            error="runner_secret",
        )
    password = box.open(integration.secret) if integration.secret else None
    if integration.kind == "git":
        return await _check_git(integration, password)
    if integration.kind == "registry":
        return await _check_registry(integration, password)
    raise Conflict(f"testing a {integration.kind} integration is not supported yet")


async def _check_git(integration: Integration, password: str | None) -> ConnectionCheck:
    assert integration.url is not None
    remote = Remote(url=integration.url, username=integration.username, password=password, env=os.environ)
    try:
        heads = await ls_remote(remote, "HEAD", seconds=CHECK_TIMEOUT)
    except GitRemoteError as exc:
        return ConnectionCheck(False, str(exc))
    return ConnectionCheck(True, f"{integration.url} answered ({len(heads)} ref(s) for HEAD)")


async def _check_registry(integration: Integration, password: str | None) -> ConnectionCheck:
    scheme = "http" if integration.insecure else "https"
    url = f"{scheme}://{integration.domain}/v2/"
    auth = (integration.username or "", password or "") if integration.username or password else None
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT, auth=auth, trust_env=True) as client:
            answer = await client.get(url)
    except (TimeoutError, httpx.HTTPError, ssl.SSLError, OSError) as exc:
        return ConnectionCheck(False, f"cannot reach {url}: {exc or type(exc).__name__}")
    if answer.status_code == 401:
        return ConnectionCheck(False, f"{url} refused the credentials (401)")
    if answer.status_code >= 400:
        return ConnectionCheck(False, f"{url} answered {answer.status_code}")
    return ConnectionCheck(True, f"{url} answered {answer.status_code}")
