"""The builds list: filters (pipeline, branch, status, trigger, author), a search of pipeline, branch and
commit message, and keyset pages that hold at 100,000 builds; a restarted build names the one it repeated."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from outpost.server.models import Build, Pipeline
from tests.server.test_webhooks import HELLO, add_trigger, deliver
from tests.stack import Stack

MANY = 100_000


async def test_paging_through_100000_builds_gives_every_build_once_newest_first(
    stack: Stack, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the 100,000 rows are inserted once, on SQLite; the keyset query is the same on PostgreSQL")
    await stack.pipeline("app", HELLO)
    async with stack.services.tx() as session:
        pipeline = await session.scalar(select(Pipeline).where(Pipeline.name == "app"))
        assert pipeline is not None
        rows = [
            {
                "id": f"b{i:08d}",
                "account_id": pipeline.account_id,
                "pipeline_id": pipeline.id,
                "pipeline_name": "app",
                "number": i + 1,
                "runtime_id": pipeline.runtime_id,
                "status": "success",
                "yaml": "",
                "variables": {},
                "secrets": {},
                "created_at": 1_700_000_000.0 + i // 3,  # three builds a second: ties broken by id
            }
            for i in range(MANY)
        ]
        await session.execute(insert(Build), rows)

    seen: list[str] = []
    before: str | None = None
    async with stack.client() as c:
        for _ in range(MANY // 500 + 2):  # bounded: a `before` that did not page on would repeat a page
            params: dict[str, str | int] = {"limit": 500, **({"before": before} if before else {})}
            r = await c.get("/api/v1/builds", params=params)
            assert r.status_code == 200, r.text
            page = [b["id"] for b in r.json()]
            if not page:
                break
            seen.extend(page)
            before = page[-1]
    assert len(seen) == MANY
    assert seen == [f"b{i:08d}" for i in reversed(range(MANY))]


async def test_filters_and_search_narrow_the_list(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    await stack.pipeline("web", HELLO)
    by_hand = await stack.run("app", branch="feature/login")
    await stack.run("web", branch="main")
    trigger = await add_trigger(stack, provider="gitlab", repo="mike/diaspora")
    hooked = (await deliver(stack, trigger, "doc-push-hook")).json()["build"]

    async def ids(**params: str) -> set[str]:
        r = await stack.api("GET", "/builds", params=params)
        assert r.status_code == 200, r.text
        return {b["id"] for b in r.json()}

    assert await ids(branch="feature/login") == {by_hand["id"]}
    assert await ids(trigger="webhook") == {hooked}
    assert await ids(author="jsmith") == {hooked}
    assert await ids(pipeline="app", trigger="build") == {by_hand["id"]}
    assert await ids(q="FIXED README") == {hooked}  # the commit message, any case
    assert await ids(q="login") == {by_hand["id"]}  # the branch
    assert len(await ids(q="we")) == 1  # the pipeline's name
    assert await ids(q="100%") == set()  # LIKE's wildcards are plain characters
    assert await ids(status="queued", branch="nope") == set()


async def test_paging_on_from_an_unknown_build_is_404_and_overlong_filters_422(stack: Stack) -> None:
    assert (await stack.api("GET", "/builds", params={"before": "nope"})).status_code == 404
    assert (await stack.api("GET", "/builds", params={"q": "x" * 300})).status_code == 422
