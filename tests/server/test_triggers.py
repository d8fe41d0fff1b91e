"""Triggers in the API and the CLI: created only when valid, secrets sealed, deliveries listed."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from fastapi.routing import APIRoute
from sqlalchemy import select, text

from outpost.server.api import triggers as triggers_api
from outpost.server.api import webhooks as webhooks_api
from outpost.server.models import Build, Trigger
from tests.server.test_webhooks import GITHUB_PUSH, HELLO, add_trigger, deliver, fixture, signed
from tests.stack import BASE, Stack

GIT = {"pipeline": "app", "provider": "github", "repo": "acme/api", "events": ["push"]}


async def test_a_git_trigger_answers_its_endpoint_and_secret_once(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    r = await stack.api("POST", "/triggers", json={**GIT, "branch_regex": "/^main$/", "variables": {"K": "v"}})
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["cache-control"] == "no-store"
    assert created["endpoint"] == f"{BASE}/webhooks/{created['id']}"
    assert len(created["secret"]) >= 40
    assert (created["kind"], created["name"], created["termination_policy"]) == ("git", "github acme/api", "none")
    shown = (await stack.api("GET", f"/triggers/{created['id']}")).json()
    assert shown["secret"] is None
    assert shown["endpoint"] == created["endpoint"]
    assert created["secret"] not in (await stack.api("GET", "/triggers")).text
    revealed = await stack.api("GET", f"/triggers/{created['id']}/secret")
    assert revealed.json() == {"id": created["id"], "secret": created["secret"]}
    assert revealed.headers["cache-control"] == "no-store"


async def test_the_secret_is_stored_encrypted_not_in_clear(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    created = (await stack.api("POST", "/triggers", json=GIT)).json()
    async with stack.services.tx() as session:
        stored = (await session.execute(text("SELECT secret FROM triggers"))).scalar_one()
    assert created["secret"] not in stored
    assert stack.services.secrets.open(stored) == created["secret"]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"branch_regex": "/[unclosed/"}, "branch_regex"),
        ({"branch_regex": "/main/x"}, "unknown flag"),
        ({"pr_target_regex": "(?P<"}, "pr_target_regex"),
        ({"comment_regex": "/(/"}, "comment_regex"),
        ({"modified_files_glob": "{src/**,docs"}, "modified_files_glob"),
        ({"events": ["push", "pushed"]}, "unknown event(s): pushed"),
        ({"events": []}, "at least one event"),
        ({"provider": "bitbucket-cloud"}, "provider must be one of"),
        ({"repo": "no-owner"}, "OWNER/NAME"),
        ({"repo": None}, "OWNER/NAME"),
        ({"termination_policy": "kill-everything"}, "termination_policy"),
        ({"variables": {"1BAD": "x"}}, "variable name"),
        ({"cron": "61 * * * *"}, "out of range"),
        ({"pipeline": "missing"}, "no pipeline"),
    ],
)
async def test_an_invalid_trigger_is_refused_with_the_reason_and_nothing_is_stored(
    stack: Stack, change: dict[str, Any], complaint: str
) -> None:
    await stack.pipeline("app", HELLO)
    r = await stack.api("POST", "/triggers", json={**GIT, **change})
    assert r.status_code in (404, 422), r.text
    assert complaint in r.json()["message"]
    assert (await stack.api("GET", "/triggers")).json() == []


async def test_schema_violations_are_422_too(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    for body in ({**GIT, "concurrency": 0}, {**GIT, "colour": "red"}, {"provider": "github"}):
        r = await stack.api("POST", "/triggers", json=body)
        assert r.status_code == 422, r.text
    assert (await stack.api("GET", "/triggers")).json() == []


async def test_release_events_and_every_listed_event_are_accepted(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    events = ["push.heads", "push.tags", "push.newBranch", "push.deleteBranch", "pullrequest.commentAdded"]
    events += ["pullrequest.unmerged-closed", "release", "release.published"]
    r = await stack.api("POST", "/triggers", json={**GIT, "events": events})
    assert r.status_code == 201, r.text
    assert r.json()["events"] == events


async def test_triggers_are_listed_by_pipeline_changed_and_removed(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    await stack.pipeline("docs", HELLO)
    app = (await stack.api("POST", "/triggers", json={**GIT, "name": "main pushes"})).json()
    docs = (await stack.api("POST", "/triggers", json={**GIT, "pipeline": "docs"})).json()
    assert [t["id"] for t in (await stack.api("GET", "/triggers", params={"pipeline": "docs"})).json()] == [docs["id"]]
    assert len((await stack.api("GET", "/triggers")).json()) == 2
    assert (await stack.api("GET", "/triggers", params={"pipeline": "nope"})).status_code == 404

    patched = await stack.api(
        "PATCH", f"/triggers/{app['id']}", json={"disabled": True, "concurrency": 2, "branch_regex": "/^main$/"}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["disabled"], patched.json()["concurrency"]) == (True, 2)
    bad = await stack.api("PATCH", f"/triggers/{app['id']}", json={"branch_regex": "/(/", "disabled": False})
    assert bad.status_code == 422
    unchanged = (await stack.api("GET", f"/triggers/{app['id']}")).json()
    assert (unchanged["disabled"], unchanged["branch_regex"]) == (True, "/^main$/")
    assert (await stack.api("PATCH", f"/triggers/{app['id']}", json={"events": None})).status_code == 422
    assert (await stack.api("PATCH", f"/triggers/{app['id']}", json={"cron": "* * * * *"})).status_code == 422

    removed = await stack.api("DELETE", f"/triggers/{app['id']}")
    assert removed.status_code == 200
    assert (await stack.api("GET", f"/triggers/{app['id']}")).status_code == 404
    assert [t["id"] for t in (await stack.api("GET", "/triggers")).json()] == [docs["id"]]


async def test_removing_a_trigger_keeps_its_builds_and_drops_its_deliveries(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    build = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
    assert (await stack.api("DELETE", f"/triggers/{trigger['id']}")).status_code == 200
    assert (await stack.build(build))["trigger_id"] == trigger["id"]
    assert (await deliver(stack, trigger, GITHUB_PUSH)).status_code == 404


async def test_another_accounts_trigger_is_not_found(stack: Stack) -> None:
    acme = (await stack.api("POST", "/accounts", json={"name": "acme"})).json()["token"]
    await stack.api("POST", "/runtimes", token=acme, json={"name": "acme-rt"})
    await stack.pipeline("app", HELLO, token=acme)
    theirs = (await stack.api("POST", "/triggers", token=acme, json=GIT)).json()
    for method, path in [
        ("GET", f"/triggers/{theirs['id']}"),
        ("PATCH", f"/triggers/{theirs['id']}"),
        ("DELETE", f"/triggers/{theirs['id']}"),
        ("GET", f"/triggers/{theirs['id']}/secret"),
        ("POST", f"/triggers/{theirs['id']}/rotate-secret"),
        ("GET", f"/triggers/{theirs['id']}/deliveries"),
    ]:
        r = await stack.api(method, path, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
    assert (await stack.api("GET", "/triggers")).json() == []


async def test_deliveries_are_listed_newest_first_in_pages(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, branch_regex="/^nothing$/")
    for _ in range(5):
        assert (await deliver(stack, trigger, GITHUB_PUSH)).status_code == 202
    everything = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert len(everything) == 5
    times = [d["received_at"] for d in everything]
    assert times == sorted(times, reverse=True)
    assert {(d["event"], d["outcome"], d["rule"], d["provider"]) for d in everything} == {
        ("push.heads", "filtered", "branch", "github")
    }
    path = f"/triggers/{trigger['id']}/deliveries"
    first = (await stack.api("GET", path, params={"limit": 2})).json()
    rest = (await stack.api("GET", path, params={"limit": 10, "before": first[-1]["id"]})).json()
    assert [d["id"] for d in first + rest] == [d["id"] for d in everything]
    assert (await stack.api("GET", path, params={"before": "nope"})).status_code == 404


async def test_no_trigger_route_answers_500_to_garbage(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    rng = random.Random(5)
    garbage: list[Any] = [None, 0, "", "x" * 5000, [], {}, {"pipeline": None}, {"events": [None]}, {"cron": 5}]
    garbage += [{"concurrency": 2**70}, {"variables": {"A": ["x"]}}, {"provider": "github", "repo": "a/b"}]
    routes = [r for router in (triggers_api.router, webhooks_api.router) for r in router.routes]
    async with stack.raw() as client:
        for route in routes:
            assert isinstance(route, APIRoute)
            for method in route.methods:
                for _ in range(10):
                    path = route.path.replace("{trigger_id}", rng.choice([trigger["id"], "x", "%00", "a" * 300]))
                    token = rng.choice([stack.admin_token, "opt_nonsense", ""])
                    body = json.dumps(rng.choice(garbage)).encode() if rng.random() < 0.8 else rng.randbytes(64)
                    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
                    headers["X-GitHub-Event"] = rng.choice(["push", "pull_request", "ping", "zzz"])
                    if rng.random() < 0.5:
                        headers.update(signed("github", body, trigger["secret"]))
                    kwargs: dict[str, Any] = {"headers": headers, "params": {"limit": rng.choice([0, 5, "x"])}}
                    if method not in ("GET", "DELETE"):
                        kwargs["content"] = body
                    r = await client.request(method, path, **kwargs)
                    assert r.status_code < 500, (method, path, body[:100], r.status_code, r.text[:300])
    async with stack.services.tx() as session:
        assert len(list(await session.scalars(select(Trigger)))) <= 1  # DELETE may have been picked
        assert list(await session.scalars(select(Build))) == []


# --- the CLI, as a user runs it: its own process, talking HTTP to the control plane -------------------


@asynccontextmanager
async def serving(stack: Stack) -> AsyncIterator[str]:
    """The stack's app on a loopback port (its lifespan already runs), stopped when the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(stack.app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def outpost(url: str, token: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env.update(OUTPOST_URL=url, OUTPOST_TOKEN=token, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "outpost", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_adds_lists_shows_disables_rotates_and_removes_triggers(stack: Stack) -> None:
    fixture("github", GITHUB_PUSH)  # skips early when the fixtures are absent
    await stack.pipeline("app", HELLO)
    async with serving(stack) as url:

        async def cli(*args: str, ok: bool = True) -> str:
            code, out, err = await outpost(url, stack.admin_token, *args)
            assert (code == 0) is ok, (args, code, out, err)
            return out + err

        added = await cli(
            "trigger", "add", "app", "--provider", "github", "--repo", "jessesuen/test-repo",
            "--events", "push,pullrequest", "--branch-regex", "/^main$/", "--modified-files", "{src/**,docs/*}",
            "--concurrency", "2", "--terminate-previous", "--var", "K=V", "--name", "api pushes", "--json",
        )  # fmt: skip
        trigger = json.loads(added)
        assert (trigger["name"], trigger["concurrency"], trigger["variables"]) == ("api pushes", 2, {"K": "V"})
        assert trigger["termination_policy"] == "terminate-previous-same-branch"

        plain = await cli("trigger", "add", "app", "--provider", "gitlab", "--repo", "group/sub/project")
        assert "/webhooks/" in plain
        assert "Secret token" in plain  # the GitLab instructions

        refused = await cli(
            "trigger", "add", "app", "--provider", "github", "--repo", "a/b", "--branch-regex", "/(/", ok=False
        )  # fmt: skip
        assert "branch_regex" in refused
        listed = await cli("trigger", "list", "app")
        assert "jessesuen/test-repo" in listed
        assert "group/sub/project" in listed
        assert "a/b" not in listed

        shown = await cli("trigger", "show", trigger["id"])
        assert trigger["secret"] not in shown
        assert trigger["secret"] in await cli("trigger", "show", trigger["id"], "--show-secret")

        assert "disabled" in await cli("trigger", "disable", trigger["id"])
        r = await deliver(stack, trigger, GITHUB_PUSH)
        assert r.json()["reason"] == "trigger disabled"
        assert "enabled" in await cli("trigger", "enable", trigger["id"])
        await cli("trigger", "rotate-secret", trigger["id"])
        assert (await deliver(stack, trigger, GITHUB_PUSH)).status_code == 401

        table = await cli("trigger", "deliveries", trigger["id"])
        lines = table.strip().splitlines()
        assert ("rejected" in lines[0], "401" in lines[0]) == (True, True)
        assert ("filtered" in lines[1], "disabled: trigger disabled" in lines[1]) == (True, True)
        assert len(json.loads(await cli("trigger", "deliveries", trigger["id"], "--limit", "1", "--json"))) == 1

        assert "removed" in await cli("trigger", "remove", trigger["id"])
        assert "no trigger" in await cli("trigger", "show", trigger["id"], ok=False)


async def test_the_cli_adds_a_cron_trigger_and_shows_a_build_in_the_deliveries_table(stack: Stack) -> None:
    fixture("github", GITHUB_PUSH)
    await stack.pipeline("app", HELLO)
    async with serving(stack) as url:
        code, out, err = await outpost(
            url, stack.admin_token, "trigger", "add", "app", "--cron", "0 3 * * *", "--branch", "main"
        )
        assert code == 0, err
        assert "runs at '0 3 * * *' (UTC) on branch main" in out
        trigger = await add_trigger(stack)
        build = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
        code, out, err = await outpost(url, stack.admin_token, "trigger", "deliveries", trigger["id"])
        assert code == 0, err
        assert "push.heads" in out
        assert f"build {build}" in out
        code, out, err = await outpost(url, stack.admin_token, "trigger", "add", "app", "--repo", "a/b")
        assert code == 2
        assert "--provider" in err


async def test_a_signed_webhook_nested_50000_deep_gets_400_and_a_rejected_delivery(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    for body in (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"n": ' + b"9" * 5000 + b"}"):
        r = await deliver(stack, trigger, GITHUB_PUSH, body=body)
        assert r.status_code == 400, r.text[:300]
        assert r.json()["outcome"] == "rejected"
    deliveries = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert [(d["outcome"], d["status_code"], d["rule"]) for d in deliveries] == [("rejected", 400, "json")] * 2
    assert "nests 50001 levels deep" in deliveries[1]["reason"]
    assert (await stack.api("GET", "/builds")).json() == []


async def test_brackets_inside_strings_do_not_count_as_nesting(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    payload = json.loads(fixture("github", GITHUB_PUSH))
    payload["head_commit"]["message"] = "[{" * 5000 + ' \\" ' + "}]" * 10
    r = await deliver(stack, trigger, GITHUB_PUSH, body=json.dumps(payload).encode())
    assert r.status_code == 201, r.text[:300]
