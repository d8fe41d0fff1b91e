"""HTTP clients for the benchmark: loopback only, no proxy from the environment, TCP_NODELAY on our side.

Our own sockets must not add Nagle delays to what we measure, so every client sets TCP_NODELAY.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx

from waiting import BenchError

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def client(base_url: str, *, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=base_url,
        headers=headers,
        timeout=timeout,
        transport=httpx.HTTPTransport(socket_options=NODELAY),
        trust_env=False,
    )


def free_port() -> int:
    """A port that was free a moment ago (the servers we start want a number, not a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON; BenchError for an HTTP error."""
    if response.status_code >= 400:
        request = response.request
        raise BenchError(f"{request.method} {request.url.path}: {response.status_code} {response.text[:300]}")
    return response.json()
