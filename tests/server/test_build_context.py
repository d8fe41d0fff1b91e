"""A webhook build keeps what its event said of the commit and pull request, with links to the provider's
pages: under the Git integration's address when the account has one for that provider, else the public site."""

from __future__ import annotations

import json

from tests.server.test_webhooks import HELLO, add_trigger, deliver, fixture
from tests.stack import Stack


async def test_a_github_pull_request_build_links_its_commit_and_pull_request(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, repo="Codertocat/Hello-World")

    answer = (await deliver(stack, trigger, "pull_request-opened")).json()

    build = await stack.build(answer["build"])
    git = build["git_context"]
    payload = json.loads(fixture("github", "pull_request-opened"))
    assert (git["event"], git["repo"], git["pr_number"]) == ("pullrequest.opened", "Codertocat/Hello-World", 2)
    assert git["pr_title"] == payload["pull_request"]["title"]
    assert git["pr_url"] == "https://github.com/Codertocat/Hello-World/pull/2"
    assert git["commit_url"] == f"https://github.com/Codertocat/Hello-World/commit/{build['sha']}"
    assert git["pr_target"] == "master"


async def test_links_go_to_the_accounts_gitlab_and_the_message_and_author_are_kept(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    r = await stack.api(
        "POST", "/integrations", json={"kind": "git", "name": "corp", "provider": "gitlab", "url": "https://git.corp"}
    )
    assert r.status_code == 201, r.text
    trigger = await add_trigger(stack, provider="gitlab", repo="gitlabhq/gitlab-test")

    answer = (await deliver(stack, trigger, "doc-merge-request-hook-open")).json()

    git = (await stack.build(answer["build"]))["git_context"]
    assert git["pr_url"] == "https://git.corp/gitlabhq/gitlab-test/-/merge_requests/1"
    assert (git["message"], git["author"]) == ("fixed readme", "GitLab dev user")
    # the payload's own link to the commit is kept
    assert git["commit_url"].endswith("/commits/da1560886d4f094c3e6c9ef40349f7d38b5d27d7")


async def test_a_commit_link_from_a_payload_that_is_not_http_is_not_kept(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider="gitlab", repo="mike/diaspora")
    body = json.loads(fixture("gitlab", "doc-push-hook"))
    for commit in body["commits"]:
        commit["url"] = "javascript:alert(1)"

    answer = (await deliver(stack, trigger, "doc-push-hook", body=json.dumps(body).encode())).json()

    git = (await stack.build(answer["build"]))["git_context"]
    assert git["commit_url"] == f"https://gitlab.com/mike/diaspora/-/commit/{answer_sha(body)}"


def answer_sha(body: dict[str, object]) -> str:
    return str(body["checkout_sha"])


async def test_a_build_run_by_hand_has_no_git_context(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    build = await stack.run("app", sha="a" * 40)
    assert build["git_context"] is None
