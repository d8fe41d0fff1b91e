"""Answering a kubernetes integration's connection test on the runner: the control plane asks (through the poll),
the runner asks the cluster's API server for its /version with the integration's own credential, as deploy steps
will, and posts what it saw (runner protocol: POST /cluster-checks/{id}/answer)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from outpost.deploy import clusters
from outpost.wire import ClusterCheckAnswer, ClusterCheckTask

MARGIN = 1.0  # seconds kept to post the answer before the asker gives up


async def answer(task: ClusterCheckTask, runner_secrets: Mapping[str, str], runner: str = "") -> ClusterCheckAnswer:
    """Asks the API server; every failure becomes an answer that says why, without the credential."""
    access = task.access
    who = f"runner {runner}" if runner else "the runner"
    try:
        import httpx2
        from lightkube import ConfigError, KubeConfig
        from lightkube.config.client_adapter import AsyncClient, ConnectionParams
    except ImportError as exc:
        return ClusterCheckAnswer(error=f"{who} cannot test clusters without lightkube ({exc})")
    try:
        clusters.token(access, runner_secrets)  # a runner secret this runner lacks is named
        config = KubeConfig.from_dict(clusters.kubeconfig({access.name: access}, runner_secrets, access.name))
        single = config.get(access.name)
        assert single is not None
        seconds = max(task.seconds - MARGIN, 1.0)
        params = ConnectionParams(timeout=httpx2.Timeout(seconds))
        async with AsyncClient(single, params) as http:
            response = await http.get("/version")
    except clusters.ClusterError as exc:
        return ClusterCheckAnswer(error=f"{who}: {exc}")
    except (ConfigError, ValueError, ssl.SSLError, OSError) as exc:  # a CA or key the TLS library refuses
        return ClusterCheckAnswer(error=f"{who} cannot use the integration's TLS settings: {exc}")
    except httpx2.HTTPError as exc:
        return ClusterCheckAnswer(error=f"{who} cannot reach {access.server}: {exc or type(exc).__name__}")
    if response.status_code in (401, 403):
        return ClusterCheckAnswer(error=f"{access.server} refused the credential ({response.status_code})")
    if response.status_code != 200:
        return ClusterCheckAnswer(error=f"{access.server}/version answered {response.status_code}")
    try:
        body = response.json()
        version = str(body.get("gitVersion") or f"v{body['major']}.{body['minor']}")
    except (ValueError, KeyError, AttributeError):
        return ClusterCheckAnswer(error=f"{access.server}/version is not a Kubernetes API server's answer")
    return ClusterCheckAnswer(git_version=version[:200], platform=str(body.get("platform") or "")[:200] or None)
