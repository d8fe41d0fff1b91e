"""Pipelines whose YAML lives in the repository: what the API accepts, what a build's task carries, and what the
control plane records when the runner reports the YAML it read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.test_protocol import claim, job_call
from tests.stack import Stack

HELLO = "version: '1.0'\nsteps:\n  hi:\n    image: alpine\n    commands: [echo hi]\n"
SHA = "0123456789abcdef0123456789abcdef01234567"


async def corp(stack: Stack, **extra: Any) -> None:
    body = {"kind": "git", "name": "corp", "url": "https://git.corp", "password": "pw-1", **extra}
    assert (await stack.api("POST", "/integrations", json=body)).status_code == 201


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"repo": "acme/app"}, "no default git integration"),
        ({"repo": "acme/app", "git": "nope"}, "no git integration 'nope'"),
        ({"repo": "acme/app", "yaml": HELLO}, "not both"),
        ({"repo": "not a repo"}, "must be owner/name"),
        ({"repo": "https://x/acme/app.git", "yaml_file": "/etc/passwd"}, "relative path"),
        ({"repo": "https://x/acme/app.git", "yaml_file": "../up.yml"}, "relative path"),
        ({"yaml": HELLO, "git": "corp"}, "go with --repo"),
        ({}, "give `yaml`, or `repo`"),
    ],
)
async def test_a_pipeline_from_the_repository_is_checked_without_contacting_anything(
    stack: Stack, body: dict[str, Any], reason: str
) -> None:
    r = await stack.api("POST", "/pipelines", json={"name": "app", **body})
    assert r.status_code == 422, r.text
    assert reason in r.text


async def test_the_build_task_carries_where_to_read_the_yaml_and_at_which_revision(stack: Stack) -> None:
    await corp(stack)
    r = await stack.api("POST", "/pipelines", json={"name": "app", "repo": "acme/app", "revision": "develop"})
    assert r.status_code == 201, r.text
    assert (r.json()["repo"], r.json()["git"], r.json()["revision"]) == ("acme/app", None, "develop")
    runner = await stack.register()
    expected = [("develop", None), ("main", "main"), (SHA, "main")]
    for branch, sha in (None, None), ("main", None), ("main", SHA):
        await stack.run("app", branch=branch, sha=sha)
    for revision, _ in expected:
        task = await claim(stack, runner.runner_token)
        assert task.yaml == ""
        assert task.source is not None
        assert (task.source.repo, task.source.git, task.source.path) == ("acme/app", None, "codefresh.yml")
        assert task.source.revision == revision
        assert task.integrations["corp"].password == "pw-1"  # the default integration, opened for the runner
        assert task.integrations["corp"].is_default


async def test_the_yaml_the_runner_read_is_recorded_with_its_commit(stack: Stack) -> None:
    await corp(stack)
    await stack.api("POST", "/pipelines", json={"name": "app", "repo": "acme/app", "git": "corp"})
    await stack.pipeline("inline", HELLO)
    runner = await stack.register()
    build = await stack.run("app")
    task = await claim(stack, runner.runner_token)
    r = await job_call(
        stack, task, "POST", "/started", json={"steps": [{"name": "hi"}], "yaml": HELLO, "yaml_revision": SHA}
    )
    assert r.status_code == 200, r.text
    shown = await stack.build(build["id"])
    assert (shown["yaml"], shown["yaml_revision"], shown["yaml_repo"]) == (HELLO, SHA, "acme/app")
    # A build that carries its own YAML keeps it, whatever a runner says.
    inline = await stack.run("inline")
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json={"yaml": "version: '1.0'\nsteps: {}\n", "yaml_revision": SHA})
    shown = await stack.build(inline["id"])
    assert (shown["yaml"], shown["yaml_revision"]) == (HELLO, None)
    r = await job_call(stack, task, "POST", "/started", json={"yaml_revision": "not-a-sha"})
    assert r.status_code == 422


async def test_only_the_integrations_a_build_needs_are_sent_to_its_runner(stack: Stack) -> None:
    await corp(stack)
    other = {"kind": "git", "name": "other", "url": "https://other.corp", "password": "pw-2"}
    third = {"kind": "git", "name": "third", "url": "https://third.corp", "runner_secret": "THIRD"}
    for body in (other, third):
        assert (await stack.api("POST", "/integrations", json=body)).status_code == 201
    yaml = (
        "version: '1.0'\nsteps:\n  a:\n    type: git-clone\n    repo: x/y\n    git: ${{WHICH}}\n"
        "  b:\n    image: alpine\n    commands: [echo]\n"
    )
    await stack.pipeline("p", yaml, variables={"WHICH": "third"})
    runner = await stack.register()
    await stack.run("p")
    task = await claim(stack, runner.runner_token)
    assert set(task.integrations) == {"third"}
    assert task.integrations["third"].password is None
    assert task.integrations["third"].runner_secret == "THIRD"


async def test_a_patch_clears_the_integration_and_revision_and_can_move_the_yaml_back(stack: Stack) -> None:
    await corp(stack)
    await corp(stack, name="other")
    r = await stack.api(
        "POST", "/pipelines", json={"name": "app", "repo": "acme/app", "git": "other", "revision": "develop"}
    )
    assert r.status_code == 201, r.text
    r = await stack.api("PATCH", "/pipelines/app", json={"git": "", "revision": ""})
    assert r.status_code == 200, r.text
    assert (r.json()["repo"], r.json()["git"], r.json()["revision"]) == ("acme/app", None, None)
    r = await stack.api("PATCH", "/pipelines/app", json={"yaml": HELLO, "git": "corp"})
    assert r.status_code == 422
    assert "go with --repo" in r.text
    r = await stack.api("PATCH", "/pipelines/app", json={"yaml": HELLO, "yaml_file": "ci.yml"})
    assert r.status_code == 200, r.text
    assert (r.json()["repo"], r.json()["yaml_file"]) == (None, "ci.yml")
    assert r.json()["yaml"] == HELLO
