"""Rate limits on the routes that check passwords, create credentials or take unauthenticated work, and the
login lockout: real requests through the app, from more than one client address, on SQLite (kept in memory) and
on PostgreSQL (kept in the database, so that replicas count together: two replicas at the end)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from outpost.server import cron
from outpost.server.app import fire_cron
from outpost.server.bootstrap import bootstrap
from outpost.server.models import LoginFailure, RateBucket
from outpost.server.ui.lockout import LoginLockout
from outpost.settings import ServerSettings
from outpost.wire import PREFIX
from tests.stack import BASE, Stack, running_stack, settings_for

WINDOW = 60.0  # seconds: no allowance refills during a test, however slow the machine
REFILL_WINDOW = 6.0  # for the test that waits for a refill: a request's worth comes back every 2 s
ALLOWED = 3
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def limited_settings(database_url: str, data_dir: Path, window: float = WINDOW) -> ServerSettings:
    return settings_for(
        database_url,
        data_dir,
        rate_window=window,
        rate_login=50,
        rate_tokens=ALLOWED,
        rate_webhooks=ALLOWED,
        rate_register=ALLOWED,
        login_free_failures=5,
        login_delay=0.3,
        login_max_delay=5.0,
    )


@pytest.fixture
async def limited(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, str]]:
    async with running_stack(limited_settings(database_url, tmp_path / "data")) as stack:
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


async def test_the_allowance_comes_back_after_the_window(database_url: str, tmp_path: Path) -> None:
    path, kwargs = CALLS["token"]
    settings = limited_settings(database_url, tmp_path / "data", window=REFILL_WINDOW)
    async with running_stack(settings) as stack, client_from(stack, "10.0.0.1") as client:
        for _ in range(ALLOWED):
            assert (await client.post(path, **kwargs)).status_code == 201
        assert (await client.post(path, **kwargs)).status_code == 429
        await asyncio.sleep(REFILL_WINDOW + 0.1)
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


# --- replicas on one PostgreSQL count together -------------------------------------------------------


@pytest.fixture
async def two_replicas(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Stack, Stack, str]]:
    """Two control planes (the real app, each its own process state) on one PostgreSQL database, as behind a
    load balancer; one data dir, so the second reads the admin token the first wrote."""
    settings = limited_settings(pg_url, tmp_path / "data")
    async with running_stack(settings) as a, running_stack(settings) as b:
        installation = await bootstrap(a.services, a.data_dir, local_runtime=True, ui_admin=True)
        yield a, b, installation.password


async def test_replicas_count_one_clients_allowance_together(two_replicas: tuple[Stack, Stack, str]) -> None:
    a, b, _ = two_replicas
    path, kwargs = CALLS["token"]
    async with client_from(a, "10.0.0.9") as via_a, client_from(b, "10.0.0.9") as via_b:
        codes = [(await client.post(path, **kwargs)).status_code for client in (via_a, via_b, via_a)]
        assert codes == [201] * ALLOWED
        refused = await via_b.post(path, **kwargs)  # B alone has seen one call: it counts A's too
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await via_a.post(path, **kwargs)).status_code == 429
    async with client_from(b, "10.0.0.10") as other:
        assert (await other.post(path, **kwargs)).status_code == 201  # another address has its own
    async with a.services.tx() as session:
        held = await session.scalar(select(func.count()).select_from(RateBucket))
    assert held == 2


async def test_a_guesser_slowed_by_one_replica_is_slowed_by_the_other(two_replicas: tuple[Stack, Stack, str]) -> None:
    a, b, password = two_replicas
    async with client_from(a, "10.6.6.6") as on_a, client_from(b, "10.6.6.6") as on_b:
        for n in range(6):  # five free failures and the one that starts the delay, spread over both
            r = await log_in(on_a if n % 2 else on_b, "admin", f"guess-{n}")
            assert r.status_code == 401, (n, r.text)
        for client in (on_a, on_b):
            r = await log_in(client, "Admin", password)  # the right password waits too, on either replica
            assert r.status_code == 429, r.text
            assert "Too many failed logins" in r.text
        await asyncio.sleep(0.35)  # the first delay
        assert (await log_in(on_b, "admin", password)).status_code == 303
    async with a.services.tx() as session:  # the success cleared the pair for both
        assert await session.scalar(select(func.count()).select_from(LoginFailure)) == 0


async def test_the_cron_forgets_allowances_full_again_and_failures_that_would_start_over(
    two_replicas: tuple[Stack, Stack, str],
) -> None:
    a, b, _ = two_replicas
    path, kwargs = CALLS["token"]
    async with client_from(a, "10.0.0.11") as client:
        assert (await client.post(path, **kwargs)).status_code == 201
        assert (await log_in(client, "admin", "wrong")).status_code == 401
    async with a.services.tx() as session:
        assert await session.scalar(select(func.count()).select_from(RateBucket)) == 2  # token and login
        assert await session.scalar(select(func.count()).select_from(LoginFailure)) == 1
        await session.execute(update(RateBucket).values(at=RateBucket.at - WINDOW - 1.0))  # full again by now
        await session.execute(update(LoginFailure).values(last=LoginFailure.last - 11.0))  # past 2 x login_max_delay
    async with client_from(b, "10.0.0.12") as fresh:  # an allowance in use: kept
        assert (await fresh.post(path, **kwargs)).status_code == 201
    for replica in (a, b):  # whichever leads the background jobs removes them
        await fire_cron(replica.services, cron.minute_of(time.time()))
    async with b.services.tx() as session:
        assert list(await session.scalars(select(RateBucket.client))) == ["10.0.0.12"]
        assert await session.scalar(select(func.count()).select_from(LoginFailure)) == 0
