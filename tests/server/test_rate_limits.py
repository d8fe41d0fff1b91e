"""Rate limits on the routes that check passwords, create credentials or take unauthenticated work, and the
login lockout: real requests through the app, from more than one client address."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.server.bootstrap import bootstrap
from outpost.server.ui.lockout import LoginLockout
from outpost.settings import ServerSettings
from outpost.wire import PREFIX
from tests.stack import BASE, Stack, running_stack, settings_for

WINDOW = 0.6  # seconds: small, so the tests that wait for a refill stay short
ALLOWED = 3
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    settings = settings_for(
        f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}",
        tmp_path / "data",
        rate_window=WINDOW,
        rate_login=50,
        rate_tokens=ALLOWED,
        rate_webhooks=ALLOWED,
        rate_register=ALLOWED,
        login_free_failures=5,
        login_delay=0.3,
        login_max_delay=5.0,
    )
    async with running_stack(settings) as stack:
        installation = await bootstrap(stack.services, stack.data_dir, local_runtime=True, ui_admin=True)
        yield stack, installation.password


def client_from(stack: Stack, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=stack.app, client=(address, 40000))
    return httpx.AsyncClient(
        transport=transport, base_url=BASE, headers={"Authorization": f"Bearer {stack.admin_token}"}
    )


CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "token": ("/api/v1/tokens", {"json": {"name": "bot"}}),
    "install token": ("/api/v1/runtimes/local/install-tokens", {}),
    "registration": (PREFIX + "/register", {"json": {"install_token": "opi_wrong", "name": "r"}}),
    "webhook": ("/webhooks/nosuchtrigger", {"content": b"{}", "headers": {"content-type": "application/json"}}),
}


@pytest.mark.parametrize("route", list(CALLS))
async def test_the_call_past_the_allowance_gets_429_with_retry_after_and_a_reason(
    limited: tuple[Stack, str], route: str
) -> None:
    stack, _ = limited
    path, kwargs = CALLS[route]
    async with client_from(stack, "10.0.0.1") as client:
        for _ in range(ALLOWED):
            r = await client.post(path, **kwargs)
            assert r.status_code != 429, r.text
        r = await client.post(path, **kwargs)
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"] == "rate_limited"
    assert "too many" in r.json()["message"]
    assert "10.0.0.1" in r.json()["message"]


async def test_one_address_over_its_allowance_does_not_limit_another(limited: tuple[Stack, str]) -> None:
    stack, _ = limited
    path, kwargs = CALLS["token"]
    async with client_from(stack, "10.0.0.1") as greedy, client_from(stack, "10.0.0.2") as other:
        codes = [(await greedy.post(path, **kwargs)).status_code for _ in range(ALLOWED + 2)]
        assert codes[-1] == 429
        r = await other.post(path, **kwargs)
    assert r.status_code == 201, r.text


async def test_the_allowance_comes_back_after_the_window(limited: tuple[Stack, str]) -> None:
    stack, _ = limited
    path, kwargs = CALLS["token"]
    async with client_from(stack, "10.0.0.1") as client:
        for _ in range(ALLOWED):
            assert (await client.post(path, **kwargs)).status_code == 201
        assert (await client.post(path, **kwargs)).status_code == 429
        await asyncio.sleep(WINDOW + 0.1)
        for _ in range(ALLOWED):
            r = await client.post(path, **kwargs)
            assert r.status_code == 201, r.text


# --- the login form --------------------------------------------------------------------------------


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    form = await client.get("/login")
    csrf = unescape(CSRF.search(form.text).group(1))  # type: ignore[union-attr]
    return await client.post("/login", data={"csrf": csrf, "username": username, "password": password, "next": ""})


async def test_guessing_a_password_is_slowed_but_the_real_user_logs_in_from_elsewhere(
    limited: tuple[Stack, str],
) -> None:
    stack, password = limited
    async with client_from(stack, "10.6.6.6") as guesser, client_from(stack, "10.1.1.1") as user:
        for n in range(6):  # five free failures, and the one that starts the delay
            r = await log_in(guesser, "admin", f"guess-{n}")
            assert r.status_code == 401, (n, r.text)
        r = await log_in(guesser, "admin", password)  # even the right password waits: nothing is checked
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert "Too many failed logins" in r.text
        r = await log_in(user, "admin", password)
        assert r.status_code == 303, r.text
        r = await log_in(guesser, "someone-else", "x")  # another username from the guesser is its own count
        assert r.status_code == 401
        await asyncio.sleep(0.35)  # the first delay
        r = await log_in(guesser, "admin", password)
        assert r.status_code == 303, r.text


def test_each_further_failure_doubles_the_wait_up_to_the_longest() -> None:
    now = [100.0]
    lockout = LoginLockout(free_failures=2, delay=1.0, max_delay=5.0, clock=lambda: now[0])
    waits = []
    for _ in range(6):
        lockout.failed("10.6.6.7", "admin")
        waits.append(lockout.wait("10.6.6.7", "Admin "))  # the same username, as the form may send it
    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 5.0]
    assert lockout.wait("10.1.1.1", "admin") == 0.0
    now[0] += 5.0
    assert lockout.wait("10.6.6.7", "admin") == 0.0
    lockout.succeeded("10.6.6.7", "admin")
    lockout.failed("10.6.6.7", "admin")
    assert lockout.wait("10.6.6.7", "admin") == 0.0  # a success starts the count over


async def test_a_login_form_of_megabytes_is_refused_before_it_is_read(limited: tuple[Stack, str]) -> None:
    stack, _ = limited
    async with client_from(stack, "10.0.0.1") as client:
        r = await client.post("/login", content=b"x" * (64 * 1024), headers={"content-type": "text/plain"})
    assert r.status_code == 413


def test_the_limits_are_read_from_the_environment() -> None:
    env = {"OUTPOST_RATE_LOGIN": "7", "OUTPOST_RATE_WINDOW": "30", "OUTPOST_LOGIN_FREE_FAILURES": "3"}
    settings = ServerSettings.from_env(env)
    assert (settings.rate_login, settings.rate_window, settings.login_free_failures) == (7, 30.0, 3)
    assert settings.rate_tokens == 60
    assert settings.rate_webhooks == 1200
