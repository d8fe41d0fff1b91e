"""Git queries: the API asks, a runner of the runtime answers through its own poll, against a real Git server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient
from outpost.wire import PREFIX
from tests import gitserver
from tests.gitserver import GitHttpServer, Upstream
from tests.stack import BASE, Stack

git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
http_git_auth = gitserver.http_git_auth

pytestmark = pytest.mark.timeout(90)

USER, PASSWORD = "robot", "s3cr3t-Pa55word"


@contextlib.asynccontextmanager
async def answering_runner(
    stack: Stack, tmp_path: Path, *, token: str | None = None, secrets: dict[str, str] | None = None
) -> AsyncIterator[Runner]:
    """A real runner agent, in-process, polling the app until the block ends."""
    identity = RunnerIdentity.registered(BASE, await stack.register(token=token))
    options = RunnerOptions(
        url=BASE, data_dir=tmp_path / f"runner-{identity.runner_id}", poll_wait=1.0, runner_secrets=secrets or {}
    )
    client = ProtocolClient(BASE, transport=httpx.ASGITransport(app=stack.app))
    runner = Runner(client, identity, options)
    running = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        await asyncio.wait_for(running, 20)
        await client.aclose()


async def corp(stack: Stack, server: GitHttpServer, token: str | None = None, **extra: object) -> None:
    body = {"kind": "git", "name": "corp", "url": server.url, "username": USER, "behind_firewall": True, **extra}
    if "runner_secret" not in extra:
        body["password"] = PASSWORD
    r = await stack.api("POST", "/integrations", token=token, json=body)
    assert r.status_code == 201, r.text


async def test_a_runner_answers_branches_file_and_changed_files(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    await corp(stack, http_git_auth, runner_secret="CORP_GIT")
    async with answering_runner(stack, tmp_path, secrets={"CORP_GIT": PASSWORD}):
        r = await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app"})
        assert r.status_code == 200, r.text
        assert r.json()["branches"] == [
            {"name": "feature/login", "sha": upstream.shas["feature"]},
            {"name": "main", "sha": upstream.shas["third"]},
        ]
        assert r.json()["runner"] == "t"
        r = await stack.api(
            "GET", "/integrations/git/corp/file", params={"repo": "acme/app", "path": "README.md", "revision": "v0.1"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["content"], body["encoding"], body["revision"]) == ("# app\n", "utf-8", upstream.shas["first"])
        r = await stack.api(
            "GET", "/integrations/git/corp/changed-files", params={"repo": "acme/app", "from": "v0.1", "to": "main"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["files"] == ["README.md", "big.bin", "login.html"]
        assert r.json()["base"] == upstream.shas["first"]


async def test_errors_of_the_git_server_reach_the_asker(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    upstream.commit("huge", files={"huge.txt": "y" * (1024 * 1024 + 1)})
    upstream.push("main")
    await corp(stack, http_git_auth)
    async with answering_runner(stack, tmp_path):
        file = "/integrations/git/corp/file"
        missing = await stack.api("GET", file, params={"repo": "acme/app", "path": "nope.yml"})
        assert missing.status_code == 404
        assert "there is no file nope.yml" in missing.json()["message"]
        huge = await stack.api("GET", file, params={"repo": "acme/app", "path": "huge.txt"})
        assert huge.status_code == 413
        assert "1048577 bytes" in huge.json()["message"]
        no_repo = await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/nothing"})
        assert no_repo.status_code == 502
        assert PASSWORD not in no_repo.text


async def test_a_missing_runner_secret_is_named_in_the_answer(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    await corp(stack, http_git_auth, runner_secret="CORP_GIT")
    async with answering_runner(stack, tmp_path, secrets={}):
        r = await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app"})
    assert r.status_code == 502
    assert "runner secret 'CORP_GIT'" in r.json()["message"]


async def test_no_runner_online_gets_503_at_once(stack: Stack) -> None:
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    r = await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app"})
    assert r.status_code == 503
    assert r.json()["message"] == "no runner of runtime local is online: start one to answer git queries"
    r = await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app", "runtime": "nope"})
    assert r.status_code == 404


async def test_a_runner_that_does_not_answer_in_time_gives_504_and_its_late_answer_is_refused(stack: Stack) -> None:
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    runner = await stack.register()  # online (it just registered), but it never polls
    r = await stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app", "wait": 1})
    assert r.status_code == 504
    assert r.json()["message"] == "no runner of runtime local answered within 1 s"
    async with stack.raw() as c:  # the expired query is handed to nobody
        polled = await c.post(
            PREFIX + "/poll", json={"wait": 0}, headers={"Authorization": f"Bearer {runner.runner_token}"}
        )
    assert polled.status_code == 204


async def test_a_query_is_handed_out_once_and_only_to_its_own_account(stack: Stack) -> None:
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    other = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    await stack.api("POST", "/runtimes", token=other, json={"name": "local"})
    outsider = await stack.register(token=other)
    mine = await stack.register()
    asking = asyncio.create_task(
        stack.api("GET", "/integrations/git/corp/branches", params={"repo": "acme/app", "wait": 5})
    )
    async with stack.raw() as c:

        async def poll(token: str) -> httpx.Response:
            return await c.post(
                PREFIX + "/poll", json={"wait": 2, "free_slots": 0}, headers={"Authorization": f"Bearer {token}"}
            )

        assert (await poll(outsider.runner_token)).status_code == 204
        task = (await poll(mine.runner_token)).json()["task"]
        assert task["kind"] == "git_query"
        assert task["query"] == "branches"
        assert task["access"]["url"] == "https://git.corp"
        assert (await poll(mine.runner_token)).status_code == 204  # once
        answer = PREFIX + f"/git-queries/{task['query_id']}/answer"
        wrong = await c.post(
            answer, json={"branches": {}}, headers={"Authorization": f"Bearer {outsider.runner_token}"}
        )
        assert wrong.status_code == 404
        right = await c.post(
            answer, json={"branches": {"main": "a" * 40}}, headers={"Authorization": f"Bearer {mine.runner_token}"}
        )
        assert right.status_code == 200, right.text
    r = await asking
    assert r.status_code == 200
    assert r.json()["branches"] == [{"name": "main", "sha": "a" * 40}]
    assert (
        await stack.api("GET", "/integrations/git/corp/branches", token=other, params={"repo": "x/y"})
    ).status_code == 404
