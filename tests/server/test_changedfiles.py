"""Webhooks whose payload does not list every changed file: a real runner computes them against a real Git
server, and the pending delivery becomes a build or a filtered one."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.server.changedfiles import NO_INTEGRATION
from outpost.server.models import Build, Delivery
from outpost.server.store.deliveries import STOPPED_WAITING
from tests import gitserver
from tests.gitserver import GitHttpServer, Upstream, create_upstream
from tests.server.test_gitqueries import PASSWORD, USER, answering_runner
from tests.server.test_triggers import outpost, serving
from tests.server.test_webhooks import HELLO, count, deliver, fixture, signed
from tests.stack import Stack, running_stack, settings_for

git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
http_git_auth = gitserver.http_git_auth

pytestmark = pytest.mark.timeout(120)

ZERO = "0" * 40
BITBUCKET_PUSH = "repo-refs-changed-branch-update"
GITHUB_FORCED = "push-branch-forced-with-commits"


async def add_integration(stack: Stack, server: GitHttpServer, name: str = "corp", **extra: Any) -> None:
    body = {"kind": "git", "name": name, "url": server.url, "username": USER, "password": PASSWORD, **extra}
    r = await stack.api("POST", "/integrations", json=body)
    assert r.status_code == 201, r.text


async def add_trigger(stack: Stack, **settings: Any) -> dict[str, Any]:
    body = {"pipeline": "app", "events": ["push"], **settings}
    r = await stack.api("POST", "/triggers", json=body)
    assert r.status_code == 201, r.text
    trigger: dict[str, Any] = r.json()
    return trigger


def bitbucket_push(before: str | None, after: str, branch: str = "main") -> bytes:
    """The Bitbucket Server push fixture, moved to this repository's commits and branch."""
    payload = json.loads(fixture("bitbucket-server", BITBUCKET_PUSH))
    change = payload["changes"][0]
    change.update(
        fromHash=before or ZERO, toHash=after, type="UPDATE" if before else "ADD", refId=f"refs/heads/{branch}"
    )
    change["ref"].update(id=f"refs/heads/{branch}", displayId=branch)
    return json.dumps(payload).encode()


def github_forced_push(before: str, after: str) -> bytes:
    """The GitHub forced-push fixture (its payload lists no usable file list), moved to acme/app's main."""
    payload = json.loads(fixture("github", GITHUB_FORCED))
    payload.update(ref="refs/heads/main", before=before, after=after)
    payload["repository"]["full_name"] = "acme/app"
    payload["head_commit"]["id"] = after
    return json.dumps(payload).encode()


async def settled(stack: Stack, trigger: dict[str, Any], delivery: str, seconds: float = 30) -> dict[str, Any]:
    """The delivery's row once it is pending no more."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        rows = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries", params={"limit": 500})).json()
        row: dict[str, Any] = next(d for d in rows if d["id"] == delivery)
        if row["outcome"] != "pending":
            return row
        assert asyncio.get_running_loop().time() < deadline, f"delivery {delivery} is still pending"
        await asyncio.sleep(0.1)


def is_pending(r: httpx.Response, runtime: str = "local") -> str:
    assert r.status_code == 202, r.text
    answer = r.json()
    assert (answer["outcome"], answer["rule"]) == ("pending", "files")
    assert answer["reason"] == f"the changed files are being computed on a runner of runtime {runtime}"
    return str(answer["delivery"])


@pytest.fixture
def bitbucket_repo(git_root: Path) -> Upstream:
    """MYPROJECT/test-repo where Bitbucket Server keeps it (/scm/...): main touches src/, then only docs/;
    feature/api leaves main's head with a change under src/."""
    up = create_upstream(git_root, "scm/MYPROJECT/test-repo.git")
    up.commit("Initial commit", files={"README.md": "# test\n"}, label="base")
    up.commit("Add the app", files={"src/app.py": "print('hi')\n"}, label="src")
    up.commit("Write the guide", files={"docs/guide.md": "# Guide\n"}, label="docs")
    up.switch("feature/api", create_from="main")
    up.commit("Add the API", files={"src/api.py": "API = 1\n"}, label="feature")
    up.switch("main")
    up.push_all()
    return up


async def test_a_bitbucket_push_builds_when_a_runner_finds_a_matching_file_and_filters_when_not(
    stack: Stack, bitbucket_repo: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    shas = bitbucket_repo.shas
    await add_integration(stack, http_git_auth, provider="bitbucket-server")
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(
        stack, provider="bitbucket-server", repo="MYPROJECT/test-repo", modified_files_glob="src/**"
    )
    async with answering_runner(stack, tmp_path):
        sent = signed("bitbucket-server", bitbucket_push(shas["base"], shas["src"]), trigger["secret"], "push-1")
        src = is_pending(
            await deliver(stack, trigger, BITBUCKET_PUSH, body=bitbucket_push(shas["base"], shas["src"]), **sent)
        )
        docs = is_pending(await deliver(stack, trigger, BITBUCKET_PUSH, body=bitbucket_push(shas["src"], shas["docs"])))
        new_branch = bitbucket_push(None, shas["feature"], branch="feature/api")
        branch = is_pending(await deliver(stack, trigger, BITBUCKET_PUSH, body=new_branch))

        built = await settled(stack, trigger, src)
        assert (built["outcome"], built["status_code"], built["rule"], built["reason"]) == ("build", 201, None, None)
        row = await stack.build(built["build"])
        assert (row["trigger"], row["branch"], row["sha"]) == ("webhook", "main", shas["src"])
        assert row["variables"]["CF_REVISION"] == shas["src"]
        filtered = await settled(stack, trigger, docs)
        assert (filtered["outcome"], filtered["status_code"], filtered["rule"]) == ("filtered", 202, "files")
        assert filtered["reason"] == "no changed file matches src/** (changed: docs/guide.md)"
        assert filtered["build"] is None
        # A new branch is compared with the default branch: only src/api.py differs from main.
        from_main = await settled(stack, trigger, branch)
        assert from_main["outcome"] == "build"
        assert (await stack.build(from_main["build"]))["branch"] == "feature/api"

        again = await deliver(stack, trigger, BITBUCKET_PUSH, body=bitbucket_push(shas["base"], shas["src"]), **sent)
    assert again.status_code == 201
    assert again.headers["outpost-redelivery"] == "true"
    assert (again.json()["outcome"], again.json()["build"]) == ("build", built["build"])
    assert await count(stack, Build) == 2
    async with stack.services.tx() as session:
        build = await session.get_one(Build, built["build"])
        assert build.event is not None
        assert build.event["changes"][0]["toHash"] == shas["src"]


async def test_a_forced_push_builds_the_trigger_whose_glob_matches_and_filters_the_other(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    dropped = upstream.shas["third"]  # changed README.md; the rewrite drops it and adds docs instead
    rewritten = upstream.force_push_rewrite("main", "Docs instead", files={"docs/intro.md": "# Intro\n"})
    await add_integration(stack, http_git_auth, name="default-one")
    await add_integration(stack, http_git_auth, name="corp")
    await stack.pipeline("app", HELLO)
    docs = await add_trigger(stack, provider="github", repo="acme/app", modified_files_glob="docs/**", git="corp")
    src = await add_trigger(stack, provider="github", repo="acme/app", modified_files_glob="{src/**,!docs/**}")
    assert (docs["git"], src["git"]) == ("corp", None)
    body = github_forced_push(dropped, rewritten)
    async with answering_runner(stack, tmp_path):
        to_docs = is_pending(await deliver(stack, docs, GITHUB_FORCED, body=body))
        to_src = is_pending(await deliver(stack, src, GITHUB_FORCED, body=body))
        built = await settled(stack, docs, to_docs)
        filtered = await settled(stack, src, to_src)
    assert built["outcome"] == "build"
    assert (await stack.build(built["build"]))["sha"] == rewritten
    assert (filtered["outcome"], filtered["rule"]) == ("filtered", "files")
    assert filtered["reason"] == "no changed file matches {src/**,!docs/**} (changed: README.md, docs/intro.md)"
    assert await count(stack, Build) == 1


async def test_a_pull_request_is_compared_with_its_target_branch(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    payload = json.loads(fixture("github", "pull_request-opened"))
    payload["repository"]["full_name"] = "acme/app"
    payload["pull_request"]["head"].update(ref="feature/login", sha=upstream.shas["feature"])
    payload["pull_request"]["base"]["ref"] = "main"
    await add_integration(stack, http_git_auth)
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(
        stack, provider="github", repo="acme/app", events=["pullrequest"], modified_files_glob="*.txt"
    )
    async with answering_runner(stack, tmp_path):
        r = await deliver(stack, trigger, "pull_request-opened", body=json.dumps(payload).encode())
        row = await settled(stack, trigger, is_pending(r))
    assert row["outcome"] == "build", row
    build = await stack.build(row["build"])
    assert (build["branch"], build["sha"]) == ("feature/login", upstream.shas["feature"])
    assert build["variables"]["CF_PULL_REQUEST_TARGET"] == "main"


async def test_without_a_git_integration_the_glob_filters_and_says_so(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider="github", repo="acme/app", modified_files_glob="src/**")
    r = await deliver(stack, trigger, GITHUB_FORCED, body=github_forced_push("a" * 40, "b" * 40))
    assert r.status_code == 202
    answer = r.json()
    assert (answer["outcome"], answer["rule"]) == ("filtered", "files")
    assert answer["reason"].startswith("the payload does not list every changed file")
    assert answer["reason"].endswith(NO_INTEGRATION)


async def test_with_no_runner_online_the_glob_filters_and_says_so(stack: Stack) -> None:
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider="github", repo="acme/app", modified_files_glob="src/**")
    r = await deliver(stack, trigger, GITHUB_FORCED, body=github_forced_push("a" * 40, "b" * 40))
    assert (r.status_code, r.json()["outcome"]) == (202, "filtered")
    assert r.json()["reason"].endswith("no runner of runtime local is online: start one to answer git queries")
    deliveries = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert (deliveries[0]["outcome"], deliveries[0]["reason"]) == ("filtered", r.json()["reason"])


@pytest.fixture
async def impatient(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A control plane that waits 2 s for changed files."""
    async with running_stack(settings_for(database_url, tmp_path / "data", changed_files_wait=2.0)) as s:
        yield s


async def test_a_runner_that_does_not_answer_in_time_leaves_the_delivery_filtered(impatient: Stack) -> None:
    stack = impatient
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider="github", repo="acme/app", modified_files_glob="src/**")
    await stack.register()  # online (it just registered), but it never polls
    delivery = str(uuid.uuid4())
    body = github_forced_push("a" * 40, "b" * 40)
    first = await deliver(
        stack, trigger, GITHUB_FORCED, body=body, **signed("github", body, trigger["secret"], delivery)
    )
    row_id = is_pending(first)
    pending = await deliver(
        stack, trigger, GITHUB_FORCED, body=body, **signed("github", body, trigger["secret"], delivery)
    )
    assert (pending.status_code, pending.json()) == (202, first.json())  # a redelivery meanwhile: still pending
    row = await settled(stack, trigger, row_id, seconds=10)
    assert (row["outcome"], row["rule"]) == ("filtered", "files")
    assert row["reason"] == "no runner of runtime local answered within 2 s"
    assert await count(stack, Build) == 0


async def test_a_triggers_git_integration_must_exist(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    body = {"pipeline": "app", "provider": "github", "repo": "acme/app", "events": ["push"], "git": "nope"}
    r = await stack.api("POST", "/triggers", json=body)
    assert r.status_code == 422
    assert "no git integration 'nope'" in r.json()["message"]
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    trigger = await add_trigger(stack, provider="github", repo="acme/app", git="corp")
    assert (await stack.api("PATCH", f"/triggers/{trigger['id']}", json={"git": "nope"})).status_code == 422
    r = await stack.api("PATCH", f"/triggers/{trigger['id']}", json={"git": None})
    assert (r.status_code, r.json()["git"]) == (200, None)


async def test_a_delivery_left_pending_by_a_stopped_control_plane_is_filtered_later(stack: Stack) -> None:
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider="github", repo="acme/app", modified_files_glob="src/**")
    await stack.register()  # online, never answers
    body = github_forced_push("a" * 40, "b" * 40)
    headers = signed("github", body, trigger["secret"], "left-behind")
    row_id = is_pending(await deliver(stack, trigger, GITHUB_FORCED, body=body, **headers))
    await stack.services.stop_background()  # what shutting down does to the waiting task
    async with stack.services.tx() as session:  # ...and time passes beyond the wait
        row = await session.get_one(Delivery, row_id)
        assert row.pending_until is not None
        row.pending_until = time.time() - 1
    listed = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert (listed[0]["outcome"], listed[0]["reason"]) == ("filtered", STOPPED_WAITING)
    again = await deliver(stack, trigger, GITHUB_FORCED, body=body, **headers)
    assert (again.status_code, again.json()["outcome"], again.json()["reason"]) == (202, "filtered", STOPPED_WAITING)
    assert await count(stack, Build) == 0


async def test_the_cli_gives_a_trigger_its_git_integration_and_shows_a_pending_delivery(stack: Stack) -> None:
    await stack.api("POST", "/integrations", json={"kind": "git", "name": "corp", "url": "https://git.corp"})
    await stack.pipeline("app", HELLO)
    await stack.register()  # online, never answers: the delivery stays pending
    async with serving(stack) as url:
        add = ("trigger", "add", "app", "--provider", "github", "--repo", "acme/app", "--modified-files", "src/**")
        code, out, err = await outpost(url, stack.admin_token, *add, "--git", "nope")
        assert code != 0
        assert "no git integration 'nope'" in out + err
        code, out, err = await outpost(url, stack.admin_token, *add, "--git", "corp", "--json")
        assert code == 0, err
        trigger = json.loads(out)
        assert trigger["git"] == "corp"
        body = github_forced_push("a" * 40, "b" * 40)
        is_pending(await deliver(stack, trigger, GITHUB_FORCED, body=body))
        code, out, err = await outpost(url, stack.admin_token, "trigger", "deliveries", trigger["id"])
    assert code == 0, err
    assert "pending" in out
    assert "the changed files are being computed on a runner of runtime local (ask again in a moment)" in out
