"""An in-process control plane for tests: the real app, its lifespan and database, driven over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from outpost.runner.client import ProtocolClient
from outpost.server.app import create_app
from outpost.server.bootstrap import bootstrap
from outpost.server.services import Services
from outpost.settings import ServerSettings
from outpost.wire import PREFIX, RegisterRequest, RegisterResponse

BASE = "http://outpost.test"


@dataclass
class Stack:
    app: FastAPI
    services: Services
    admin_token: str
    data_dir: Path

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE, headers=headers)

    def raw(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    def protocol(self) -> ProtocolClient:
        return ProtocolClient(BASE, transport=httpx.ASGITransport(app=self.app))

    async def api(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        async with self.client(token) as c:
            return await c.request(method, "/api/v1" + path, **kwargs)

    async def install_token(self, runtime: str = "local", *, token: str | None = None) -> str:
        r = await self.api("POST", f"/runtimes/{runtime}/install-tokens", token=token)
        assert r.status_code == 201, r.text
        value: str = r.json()["install_token"]
        return value

    async def register(self, runtime: str = "local", *, token: str | None = None) -> RegisterResponse:
        install = await self.install_token(runtime, token=token)
        async with self.raw() as c:
            r = await c.post(PREFIX + "/register", json=RegisterRequest(install_token=install, name="t").model_dump())
        assert r.status_code == 201, r.text
        return RegisterResponse.model_validate(r.json())

    async def pipeline(self, name: str, yaml: str, *, token: str | None = None, **extra: Any) -> dict[str, Any]:
        r = await self.api("POST", "/pipelines", token=token, json={"name": name, "yaml": yaml, **extra})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def run(self, pipeline: str, *, token: str | None = None, **body: Any) -> dict[str, Any]:
        r = await self.api("POST", f"/pipelines/{pipeline}/builds", token=token, json=body)
        assert r.status_code == 201, r.text
        build: dict[str, Any] = r.json()
        return build

    async def build(self, build_id: str, *, token: str | None = None) -> dict[str, Any]:
        r = await self.api("GET", f"/builds/{build_id}", token=token)
        assert r.status_code == 200, r.text
        build: dict[str, Any] = r.json()
        return build


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "lease_ttl": 2.0,
        "heartbeat_interval": 0.5,
        "poll_timeout": 5.0,
        "max_log_chunk": 64 * 1024,
    }
    values.update(overrides)
    return ServerSettings(**values)


@asynccontextmanager
async def running_stack(settings: ServerSettings) -> AsyncIterator[Stack]:
    app = create_app(settings, public_url=BASE)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        installation = await bootstrap(services, settings.data_dir, local_runtime=True)
        yield Stack(app, services, installation.admin_token, settings.data_dir)
