"""Integrations in the API: create, list, show, change, remove, test; secrets never come back; the control plane
never connects to an integration behind the firewall."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import gitserver
from tests.gitserver import GitHttpServer, Upstream
from tests.stack import Stack

git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
http_git_auth = gitserver.http_git_auth

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "robot", "s3cr3t-Pa55word"


class Listener:
    """A TCP port that counts every connection made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    counting = Listener()
    try:
        yield counting
    finally:
        counting.close()


async def add(stack: Stack, token: str | None = None, **body: Any) -> dict[str, Any]:
    r = await stack.api("POST", "/integrations", token=token, json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_a_git_integration_keeps_its_password_sealed_and_never_shows_it(stack: Stack) -> None:
    created = await add(
        stack, kind="git", name="corp", provider="gitlab", url="https://git.corp", username="ci", password="hunter2-x"
    )
    assert created["has_secret"] is True
    assert created["default"] is True  # the first of its kind
    for r in (
        await stack.api("GET", "/integrations"),
        await stack.api("GET", "/integrations/git/corp"),
        await stack.api("GET", "/integrations?kind=git"),
    ):
        assert r.status_code == 200
        assert "hunter2-x" not in r.text
    async with stack.services.tx() as session:
        from outpost.server.models import Integration

        row = await session.get_one(Integration, created["id"])
        assert row.secret is not None
        assert "hunter2-x" not in row.secret
        assert stack.services.secrets.open(row.secret) == "hunter2-x"


async def test_a_runner_secret_means_the_control_plane_holds_no_credential(stack: Stack) -> None:
    created = await add(
        stack, kind="git", name="corp", url="https://git.corp", username="ci", runner_secret="CORP_GIT_TOKEN"
    )
    assert created["has_secret"] is False
    assert created["runner_secret"] == "CORP_GIT_TOKEN"
    r = await stack.api("PATCH", "/integrations/git/corp", json={"token": "t0ken-abc"})
    assert r.status_code == 200, r.text
    assert (r.json()["has_secret"], r.json()["runner_secret"]) == (True, None)
    r = await stack.api("PATCH", "/integrations/git/corp", json={"runner_secret": "AGAIN"})
    assert (r.json()["has_secret"], r.json()["runner_secret"]) == (False, "AGAIN")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"kind": "git", "name": "x", "url": "ftp://git.corp"}, "must start with"),
        ({"kind": "git", "name": "x", "url": "https://u:p@git.corp"}, "not in the URL"),
        ({"kind": "git", "name": "x"}, "needs a URL"),
        ({"kind": "git", "name": "x", "url": "https://git.corp", "provider": "svn"}, "provider is one of"),
        ({"kind": "git", "name": "x", "url": "https://g", "password": "p", "runner_secret": "S"}, "not both"),
        ({"kind": "git", "name": "x", "url": "https://g", "password": "p", "token": "t"}, "not both"),
        ({"kind": "git", "name": "x", "url": "https://g", "runner_secret": "bad name"}, "runner secret name"),
        ({"kind": "git", "name": "bad name", "url": "https://g"}, "integration name"),
        ({"kind": "git", "name": "x", "url": "https://g", "tags": ["ok", "no spaces"]}, "tag"),
        ({"kind": "registry", "name": "x", "domain": "https://reg.corp"}, "no scheme"),
        ({"kind": "registry", "name": "x"}, "needs --domain"),
        ({"kind": "vault", "name": "x"}, "kind 'vault'"),
    ],
)
async def test_invalid_integrations_get_422_with_the_reason(stack: Stack, body: dict[str, Any], reason: str) -> None:
    r = await stack.api("POST", "/integrations", json=body)
    assert r.status_code == 422, r.text
    assert reason in r.json()["message"]
    assert (await stack.api("GET", "/integrations")).json() == []


async def test_names_are_unique_per_kind_and_one_default_per_kind(stack: Stack) -> None:
    await add(stack, kind="git", name="a", url="https://a.corp")
    await add(stack, kind="registry", name="a", domain="reg.corp:5000", insecure=True)
    r = await stack.api("POST", "/integrations", json={"kind": "git", "name": "a", "url": "https://b"})
    assert r.status_code == 409
    await add(stack, kind="git", name="b", url="git@b.corp:", default=True)
    rows = {(i["kind"], i["name"]): i["default"] for i in (await stack.api("GET", "/integrations")).json()}
    assert rows == {("git", "a"): False, ("git", "b"): True, ("registry", "a"): True}
    r = await stack.api("DELETE", "/integrations/git/b")
    assert r.status_code == 204
    assert (await stack.api("GET", "/integrations/git/a")).json()["default"] is True  # the heir
    assert (await stack.api("GET", "/integrations/git/b")).status_code == 404


async def test_another_account_sees_none_of_them(stack: Stack) -> None:
    await add(stack, kind="git", name="corp", url="https://git.corp", password="p4ss")
    other = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    assert (await stack.api("GET", "/integrations", token=other)).json() == []
    assert (await stack.api("GET", "/integrations/git/corp", token=other)).status_code == 404
    assert (await stack.api("DELETE", "/integrations/git/corp", token=other)).status_code == 404
    assert (await stack.api("POST", "/integrations/git/corp/test", token=other)).status_code == 404
    await add(stack, token=other, kind="git", name="corp", url="https://other.corp")  # its own namespace


async def test_testing_an_integration_behind_the_firewall_is_refused_without_connecting(
    stack: Stack, listener: Listener
) -> None:
    url = f"http://127.0.0.1:{listener.port}"
    await add(stack, kind="git", name="inside", url=url, password="p", behind_firewall=True)
    await add(stack, kind="registry", name="reg", domain=f"127.0.0.1:{listener.port}", behind_firewall=True)
    for path in ("/integrations/git/inside/test", "/integrations/registry/reg/test"):
        r = await stack.api("POST", path)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "behind_firewall"
        assert (
            "the control plane cannot reach integrations behind the firewall; a runner of the runtime can"
            in (r.json()["message"])
        )
    # Every other path that names the integration: a pipeline reading YAML through it, a build handed out.
    await stack.api("POST", "/pipelines", json={"name": "p", "repo": "acme/app", "git": "inside"})
    await stack.run("p")
    runner = await stack.register()
    async with stack.raw() as c:
        r = await c.post(
            "/api/runner/v1/poll",
            json={"free_slots": 1, "wait": 0},
            headers={"Authorization": f"Bearer {runner.runner_token}"},
        )
    assert r.json()["task"]["integrations"]["inside"]["url"] == url
    assert listener.connections == 0


async def test_a_git_connection_test_runs_git_ls_remote_against_the_server(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer
) -> None:
    url = http_git_auth.repo_url(upstream.name)
    await add(stack, kind="git", name="good", url=url, username=USER, password=PASSWORD)
    await add(stack, kind="git", name="bad", url=url, username=USER, password="wrong-Pa55")
    good = await stack.api("POST", "/integrations/git/good/test")
    assert good.status_code == 200, good.text
    assert good.json()["ok"] is True
    bad = (await stack.api("POST", "/integrations/git/bad/test")).json()
    assert bad["ok"] is False
    assert "authentication failed" in bad["message"]
    assert "wrong-Pa55" not in bad["message"]


async def test_a_runner_secret_integration_cannot_be_tested_from_the_control_plane(stack: Stack) -> None:
    await add(stack, kind="git", name="x", url="https://git.corp", runner_secret="TOKEN")
    r = await stack.api("POST", "/integrations/git/x/test")
    assert r.status_code == 409
    assert "kept only on the runners" in r.json()["message"]


class _Registry(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/v2/" and self.headers.get("Authorization", "").startswith("Basic ")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[int]:
    """A plain-HTTP server that answers GET /v2/ like a registry: 200 with credentials, else 401."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_a_registry_connection_test_asks_v2(stack: Stack, registry: int, tmp_path: Path) -> None:
    domain = f"127.0.0.1:{registry}"
    await add(stack, kind="registry", name="ok", domain=domain, insecure=True, username="u", password="p")
    await add(stack, kind="registry", name="anon", domain=domain, insecure=True)
    assert (await stack.api("POST", "/integrations/registry/ok/test")).json()["ok"] is True
    anon = (await stack.api("POST", "/integrations/registry/anon/test")).json()
    assert anon == {"ok": False, "message": f"http://{domain}/v2/ refused the credentials (401)"}


async def test_no_integration_route_answers_500_to_garbage(stack: Stack) -> None:
    import json
    import random

    from fastapi.routing import APIRoute

    from outpost.server.api import gitqueries as gitqueries_api
    from outpost.server.api import integrations as integrations_api
    from tests.server.test_bad_input import GARBAGE, concrete

    await add(stack, kind="git", name="x", url="https://git.corp", behind_firewall=True)
    rng = random.Random(4321)
    routers = (integrations_api.router, gitqueries_api.router)
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 9
    async with stack.raw() as client:
        for route in routes:
            for method in route.methods:
                for _ in range(12):
                    headers = {"Authorization": f"Bearer {rng.choice([stack.admin_token, 'opt_nonsense', ''])}"}
                    params = {k: rng.choice(["x", "", "a" * 600, "%00", "1"]) for k in ("repo", "path", "from", "to")}
                    params["wait"] = rng.choice(["0.01", "-1", "x", "100"])
                    kwargs: dict[str, Any] = {"headers": headers, "params": params}
                    if method not in ("GET", "DELETE"):
                        kwargs["content"] = json.dumps(rng.choice(GARBAGE)).encode()
                        headers["content-type"] = "application/json"
                    r = await client.request(method, concrete(route.path, rng), **kwargs)
                    assert r.status_code < 500 or r.status_code in (502, 503, 504), (method, route.path, r.text[:300])
    assert [i["name"] for i in (await stack.api("GET", "/integrations")).json()] == ["x"]
