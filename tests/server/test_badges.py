"""Status badges: off until an admin turns one on; then `/badge/KEY/PIPELINE.svg` shows the latest finished
build's status (of a branch when asked) to anyone with the key, and nothing to anyone without it: an unknown
key, another pipeline's key, an unknown pipeline and a badge turned off or replaced all get the same 404."""

from __future__ import annotations

import re

import httpx

from tests.stack import Stack
from tests.ui.client import UiClient

HELLO = "version: '1.0'\nsteps:\n  main:\n    image: alpine\n    commands: [echo hi]\n"


async def admin_client(stack: Stack) -> UiClient:
    r = await stack.api("POST", "/users", json={"name": "boss", "role": "admin"})
    assert r.status_code == 201, r.text
    client = UiClient(stack)
    await client.__aenter__()
    assert (await client.login("boss", r.json()["password"])).status_code == 303
    return client


async def turn(client: UiClient, pipeline: str, action: str) -> str | None:
    """Turns the badge on or off from the pipeline's page; the badge's path as the page then shows it."""
    r = await client.submit(f"/pipelines/{pipeline}", f"/pipelines/{pipeline}/badge", {"action": action})
    assert r.status_code == 303, r.text
    found = re.search(
        r"/badge/(obadge_[\w-]+)/" + pipeline + r"\.svg", (await client.get(f"/pipelines/{pipeline}")).text
    )
    return found.group(0) if found else None


async def fetch(stack: Stack, path: str) -> httpx.Response:
    async with stack.raw() as c:  # no session, no token: as a README's viewer
        return await c.get(path)


async def test_a_badge_shows_the_latest_finished_status_of_a_branch_once_turned_on(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    client = await admin_client(stack)
    try:
        assert "Turn the badge on" in (await client.get("/pipelines/app")).text
        path = await turn(client, "app", "enable")
        assert path is not None

        unknown = await fetch(stack, path + "?branch=main")
        assert unknown.status_code == 200
        assert unknown.headers["content-type"] == "image/svg+xml"
        assert unknown.headers["cache-control"].startswith("no-cache")
        assert "build: unknown" in unknown.text

        build = await stack.run("app", branch="main")
        await stack.api("POST", f"/builds/{build['id']}/cancel")
        await stack.run("app", branch="dev")  # queued: not finished, not shown
        assert "build: cancelled" in (await fetch(stack, path + "?branch=main")).text
        assert "build: cancelled" in (await fetch(stack, path)).text
        assert "build: unknown" in (await fetch(stack, path + "?branch=dev")).text
    finally:
        await client.__aexit__()


async def test_without_the_right_key_a_badge_says_nothing_not_even_that_the_pipeline_exists(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    await stack.pipeline("secret", HELLO)
    client = await admin_client(stack)
    try:
        path = await turn(client, "app", "enable")
        assert path is not None
        key = path.split("/")[2]
        refused = [
            await fetch(stack, f"/badge/obadge_{'x' * 43}/app.svg"),  # an unknown key
            await fetch(stack, f"/badge/{key}/secret.svg"),  # a pipeline that exists, with another's key
            await fetch(stack, f"/badge/{key}/nothing.svg"),  # a pipeline that does not exist
            await fetch(stack, f"/badge/{key}/app.png"),
        ]
        assert {r.status_code for r in refused} == {404}
        assert len({r.text for r in refused}) == 1

        renewed = await turn(client, "app", "enable")  # a new address: the old one stops working
        assert renewed is not None
        assert renewed != path
        assert (await fetch(stack, path)).text == refused[0].text
        assert (await fetch(stack, renewed)).status_code == 200
        assert await turn(client, "app", "disable") is None
        assert (await fetch(stack, renewed)).text == refused[0].text
    finally:
        await client.__aexit__()
