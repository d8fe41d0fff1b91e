"""An in-process browser stand-in for the web UI: cookies, forms with their CSRF token, over ASGI."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import httpx

from tests.stack import BASE, Stack

CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return unescape(match.group(1))


class UiClient:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app), base_url=BASE)

    async def __aenter__(self) -> UiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def login(self, username: str, password: str) -> httpx.Response:
        form = await self.http.get("/login")
        return await self.http.post(
            "/login", data={"csrf": csrf_of(form.text), "username": username, "password": password, "next": ""}
        )

    async def submit(self, page: str, action: str, data: dict[str, Any] | None = None) -> httpx.Response:
        """Posts a form of `page` the way a browser would: with the page's CSRF token."""
        html = (await self.http.get(page)).text
        return await self.http.post(action, data={"csrf": csrf_of(html), **(data or {})})
