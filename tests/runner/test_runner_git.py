"""The runner with git integrations, against the real control plane app and a real Git server: YAML read from
the repository at the build's revision, `git-clone` through an integration, runner-side secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient
from tests import gitserver
from tests.gitserver import GitHttpServer, Upstream
from tests.stack import BASE, Stack

git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
http_git_auth = gitserver.http_git_auth

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "robot", "s3cr3t-Pa55word"

CLONING = """version: '1.0'
steps:
  main_clone:
    type: git-clone
    repo: acme/app
    git: corp
    revision: ${{CF_BRANCH}}
  show:
    image: alpine
    commands:
      - cat README.md
      - echo "branch=$CF_BRANCH revision=$CF_REVISION owner=$CF_REPO_OWNER name=$CF_REPO_NAME"
      - git config --get remote.origin.url
"""


async def run_burst(stack: Stack, tmp_path: Path, secrets: dict[str, str] | None = None) -> None:
    identity = RunnerIdentity.registered(BASE, await stack.register())
    options = RunnerOptions(url=BASE, data_dir=tmp_path / "runner", runner_secrets=secrets or {})
    async with ProtocolClient(BASE, transport=httpx.ASGITransport(app=stack.app)) as client:
        await Runner(client, identity, options).run(burst=True)


async def log_of(stack: Stack, build_id: str, step: str) -> str:
    return (await stack.api("GET", f"/builds/{build_id}/steps/{step}/log")).content.decode(errors="replace")


async def add_corp(stack: Stack, server: GitHttpServer, **extra: Any) -> None:
    body = {"kind": "git", "name": "corp", "url": server.url, "username": USER, "behind_firewall": True, **extra}
    r = await stack.api("POST", "/integrations", json=body)
    assert r.status_code == 201, r.text


def push_pipeline_file(upstream: Upstream, text: str, *, branch: str = "main", path: str = "codefresh.yml") -> str:
    upstream.switch(branch)
    sha = upstream.commit(f"pipeline on {branch}", files={path: text})
    upstream.push(branch)
    return sha


async def test_yaml_from_the_repository_runs_at_the_builds_branch_and_is_recorded(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    await add_corp(stack, http_git_auth, runner_secret="CORP_GIT")
    main_sha = push_pipeline_file(upstream, CLONING)
    feature_yaml = CLONING.replace("cat README.md", "echo on-the-feature-branch")
    feature_sha = push_pipeline_file(upstream, feature_yaml, branch="feature/login")
    r = await stack.api(
        "POST", "/pipelines", json={"name": "app", "repo": "acme/app", "git": "corp", "yaml_file": "codefresh.yml"}
    )
    assert r.status_code == 201, r.text
    assert (r.json()["yaml"], r.json()["repo"], r.json()["git"]) == ("", "acme/app", "corp")
    on_main = await stack.run("app")
    on_feature = await stack.run("app", branch="feature/login")

    await run_burst(stack, tmp_path, secrets={"CORP_GIT": PASSWORD})

    build = await stack.build(on_main["id"])
    assert build["status"] == "success", build
    assert (build["yaml"], build["yaml_revision"], build["yaml_repo"]) == (CLONING, main_sha, "acme/app")
    shown = await log_of(stack, on_main["id"], "show")
    assert "# App" in shown
    assert f"branch=main revision={main_sha} owner=acme name=app" in shown
    assert shown.rstrip().endswith(f"{http_git_auth.url}/acme/app.git")  # no credentials kept in .git/config
    feature = await stack.build(on_feature["id"])
    assert feature["status"] == "success", feature
    assert (feature["yaml"], feature["yaml_revision"]) == (feature_yaml, feature_sha)
    assert "on-the-feature-branch" in await log_of(stack, on_feature["id"], "show")
    for step in ("main_clone", "show", "$system"):
        assert PASSWORD not in await log_of(stack, on_main["id"], step)


async def test_invalid_yaml_in_the_repository_ends_the_build_with_file_line_column(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    await add_corp(stack, http_git_auth, password=PASSWORD)
    broken = "version: '1.0'\nsteps:\n  bad:\n    image: alpine\n    commands: [echo]\n    timeout: soon\n"
    sha = push_pipeline_file(upstream, broken, path=".ci/pipeline.yml")
    await stack.api(
        "POST", "/pipelines", json={"name": "app", "repo": "acme/app", "git": "corp", "yaml_file": ".ci/pipeline.yml"}
    )
    build = await stack.run("app")
    await run_burst(stack, tmp_path)
    done = await stack.build(build["id"])
    assert done["status"] == "error"
    assert ".ci/pipeline.yml:6:14: step 'bad': `timeout` must be a duration" in done["message"]
    assert (done["yaml"], done["yaml_revision"]) == (broken, sha)


async def test_a_missing_pipeline_file_or_runner_secret_ends_the_build_with_a_clear_error(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    await add_corp(stack, http_git_auth, runner_secret="CORP_GIT")
    await stack.api("POST", "/pipelines", json={"name": "app", "repo": "acme/app", "git": "corp"})
    no_secret = await stack.run("app")
    await run_burst(stack, tmp_path / "a", secrets={})
    done = await stack.build(no_secret["id"])
    assert done["status"] == "error"
    assert "runner secret 'CORP_GIT'" in done["message"]
    no_file = await stack.run("app")
    await run_burst(stack, tmp_path / "b", secrets={"CORP_GIT": PASSWORD})
    done = await stack.build(no_file["id"])
    assert done["status"] == "error"
    assert "there is no file codefresh.yml" in done["message"]
    assert PASSWORD not in done["message"]


async def test_git_clone_through_the_default_integration_and_a_missing_secret_fails_the_step(
    stack: Stack, upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    await add_corp(stack, http_git_auth, runner_secret="CORP_GIT")
    yaml = "version: '1.0'\nsteps:\n  clone:\n    type: git-clone\n    repo: acme/app\n    revision: v1.0\n"
    await stack.pipeline("inline", yaml)
    ok = await stack.run("inline")
    await run_burst(stack, tmp_path / "a", secrets={"CORP_GIT": PASSWORD})
    assert (await stack.build(ok["id"]))["status"] == "success"
    missing = await stack.run("inline")
    await run_burst(stack, tmp_path / "b", secrets={"OTHER": "x"})
    done = await stack.build(missing["id"])
    assert done["status"] == "failure"
    clone = next(s for s in done["steps"] if s["name"] == "clone")
    assert clone["status"] == "failure"
    assert "runner secret 'CORP_GIT'" in clone["message"]
    assert "runner secret 'CORP_GIT'" in await log_of(stack, missing["id"], "clone")


async def test_a_step_naming_an_integration_the_build_was_not_given_fails_clearly(stack: Stack, tmp_path: Path) -> None:
    yaml = "version: '1.0'\nsteps:\n  clone:\n    type: git-clone\n    repo: acme/app\n    git: nowhere\n"
    await stack.pipeline("inline", yaml)
    build = await stack.run("inline")
    await run_burst(stack, tmp_path)
    clone = next(s for s in (await stack.build(build["id"]))["steps"] if s["name"] == "clone")
    assert clone["status"] == "failure"
    assert "git integration 'nowhere' is not available to this build" in clone["message"]


def test_the_secrets_file_must_not_be_world_readable(tmp_path: Path) -> None:
    from outpost.errors import OutpostError
    from outpost.runner.secrets import load_runner_secrets

    path = tmp_path / "secrets"
    path.write_text('{"CORP_GIT": "v4lue", "OTHER": "x=y"}')
    path.chmod(0o644)
    with pytest.raises(OutpostError, match="readable by every user") as caught:
        load_runner_secrets(path)
    assert "v4lue" not in str(caught.value)
    path.chmod(0o600)
    assert load_runner_secrets(path) == {"CORP_GIT": "v4lue", "OTHER": "x=y"}
    path.write_text("# comment\n\nCORP_GIT=v4lue=with=equals\nOTHER= spaced \n")
    assert load_runner_secrets(path) == {"CORP_GIT": "v4lue=with=equals", "OTHER": " spaced "}
    path.write_text("CORP_GIT v4lue\n")
    with pytest.raises(OutpostError, match=r"secrets:1: expected NAME=VALUE") as caught:
        load_runner_secrets(path)
    assert "v4lue" not in str(caught.value)
    path.write_text('{"CORP_GIT": 12345}')
    with pytest.raises(OutpostError, match="object of names to strings"):
        load_runner_secrets(path)
    with pytest.raises(OutpostError, match="cannot read"):
        load_runner_secrets(tmp_path / "missing")
    assert os.stat(path).st_mode & 0o777 == 0o600
