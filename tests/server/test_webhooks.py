"""The webhook endpoint: real provider payloads, signed as the providers sign them, through the real app."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from outpost.server.changedfiles import NO_INTEGRATION
from outpost.server.models import Build, Delivery
from tests.server.test_protocol import claim, job_call, poll
from tests.stack import Stack

FIXTURES = Path("/work/shared/fixtures/webhooks")
HELLO = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"
ALL_EVENTS = ["push.heads", "push.tags", "pullrequest"]

GITHUB_PUSH = "push-branch-forced-with-commits"


def fixture(provider: str, name: str) -> bytes:
    path = FIXTURES / provider / f"{name}.json"
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"webhook fixture {path} is missing")
        pytest.skip(f"webhook fixture {path} is missing")
    return path.read_bytes()


def event_header(provider: str, name: str, body: bytes) -> dict[str, str]:
    """The event header each provider sends with such a payload (fixtures/PROVENANCE.md)."""
    if provider == "github":
        return {"X-GitHub-Event": "pull_request" if name.startswith("pull_request") else name.split("-")[0]}
    if provider == "gitlab":
        kind = "Tag Push Hook" if "tag-push" in name else "Push Hook" if "push" in name else "Merge Request Hook"
        return {"X-Gitlab-Event": kind}
    return {"X-Event-Key": json.loads(body)["eventKey"]}


def signed(provider: str, body: bytes, secret: str, delivery: str | None = None) -> dict[str, str]:
    """The authentication and delivery-id headers a provider sends."""
    delivery = delivery or str(uuid.uuid4())
    digest = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if provider == "github":
        return {"X-Hub-Signature-256": digest, "X-GitHub-Delivery": delivery}
    if provider == "gitlab":
        return {"X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": delivery}
    return {"X-Hub-Signature": digest, "X-Request-Id": delivery}


async def add_trigger(stack: Stack, **settings: Any) -> dict[str, Any]:
    body = {"pipeline": "app", "provider": "github", "repo": "jessesuen/test-repo", "events": ALL_EVENTS, **settings}
    r = await stack.api("POST", "/triggers", json=body)
    assert r.status_code == 201, r.text
    trigger: dict[str, Any] = r.json()
    return trigger


async def deliver(
    stack: Stack, trigger: dict[str, Any], name: str, *, body: bytes | None = None, **headers: str
) -> httpx.Response:
    """POSTs a fixture (or `body`) to the trigger's endpoint, signed with its secret unless headers say otherwise."""
    provider = trigger["provider"]
    raw = body if body is not None else fixture(provider, name)
    sent = {"Content-Type": "application/json", **event_header(provider, name, raw)}
    sent.update(signed(provider, raw, trigger["secret"]))
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    async with stack.raw() as c:
        return await c.post(trigger["endpoint"].removeprefix("http://outpost.test"), content=raw, headers=sent)


async def build_row(stack: Stack, build_id: str) -> Build:
    async with stack.services.tx() as session:
        return await session.get_one(Build, build_id)


async def count(stack: Stack, model: type[Build] | type[Delivery]) -> int:
    async with stack.services.tx() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# (provider, fixture, repo, outcome, event, CF_BRANCH, CF_REVISION, CF_BUILD_INITIATOR), read from the payloads.
CASES = [
    ("github", "push-branch-created", "Codertocat/Hello-World", "build", "push.newBranch", "master",
     "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "Codertocat"),
    ("github", GITHUB_PUSH, "jessesuen/test-repo", "build", "push.heads", "master",
     "63738bb582c8b540af7bcfc18f87c575c3ed66e0", "jessesuen"),
    ("github", "push-tag-created", "jessesuen/test-repo", "build", "push.tags", "v1.0",
     "63738bb582c8b540af7bcfc18f87c575c3ed66e0", "jessesuen"),
    ("github", "pull_request-opened", "Codertocat/Hello-World", "build", "pullrequest.opened", "changes",
     "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Codertocat"),
    ("github", "pull_request-synchronize", "Codertocat/Hello-World", "build", "pullrequest.synchronize", "changes",
     "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Codertocat"),
    ("github", "pull_request-closed-not-merged", "Codertocat/Hello-World", "build", "pullrequest.unmerged-closed",
     "changes", "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Codertocat"),
    ("github", "ping", "Octocoders/Hello-World", "ignored", "ping", None, None, None),
    ("gitlab", "doc-push-hook", "mike/diaspora", "build", "push.heads", "master",
     "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "jsmith"),
    ("gitlab", "doc-tag-push-hook", "jsmith/example", "build", "push.tags", "v1.0.0",
     "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", "John Smith"),
    ("gitlab", "doc-merge-request-hook-open", "gitlabhq/gitlab-test", "build", "pullrequest.opened", "ms-viewport",
     "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "root"),
    ("gitlab", "merge-request-hook-merge", "gitlab-org/hello-world", "build", "pullrequest.merged", "feature",
     "c4c79227ed610f1151f05bbc5be33b4f340d39c8", "sytses"),
    ("gitlab", "merge-request-hook-update-oldrev", "gitlab-org/hello-world", "build", "pullrequest.synchronize",
     "feature", "c4c79227ed610f1151f05bbc5be33b4f340d39c8", "sytses"),
    ("gitlab", "push-hook-branch-deleted", "gitlab-org/hello-world", "filtered", "push.deleteBranch", None, None, None),
    ("bitbucket-server", "repo-refs-changed-branch-update", "MYPROJECT/test-repo", "build", "push.heads", "master",
     "22671f0349857934857983457983475ec39f196b", "john"),
    ("bitbucket-server", "repo-refs-changed-tag-created", "AMUNIZ/test-repos", "build", "push.tags", "simple-tag",
     "fb522a6f08c7c7df337312e4e65ec1b57710672e", "admin"),
    ("bitbucket-server", "repo-refs-changed-branch-delete", "AMUNIZ/test-repos", "filtered", "push.deleteBranch",
     None, None, None),
    ("bitbucket-server", "repo-refs-changed-personal-project-branch-delete", "~gopher/webhook-test", "filtered",
     "push.deleteBranch", None, None, None),
    ("bitbucket-server", "pr-opened", "PRJ/my-repo", "build", "pullrequest.opened", "develop",
     "208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e", "jcitizen"),
    ("bitbucket-server", "pr-merged", "PRJ/my-repo", "build", "pullrequest.merged", "develop",
     "b9eaed50a03c073b20dfa82e5e753d295e7f0e56", "jcitizen"),
    ("bitbucket-server", "pr-from-ref-updated", "DSO/test-app", "build", "pullrequest.synchronize", "feature/test",
     "ae17c5f68ea2e503a8ee40931f4a2c90db2ebe8e", "example"),
]  # fmt: skip


async def test_every_fixture_payload_gets_the_right_outcome_variables_and_event(stack: Stack) -> None:
    await stack.pipeline("app", HELLO, variables={"FROM_PIPELINE": "p", "SHARED": "pipeline"})
    triggers: dict[tuple[str, str], dict[str, Any]] = {}
    for provider, name, repo, outcome, event, branch, revision, initiator in CASES:
        key = (provider, repo)
        if key not in triggers:
            triggers[key] = await add_trigger(stack, provider=provider, repo=repo, variables={"SHARED": "trigger"})
        r = await deliver(stack, triggers[key], name)
        answer = r.json()
        assert answer["outcome"] == outcome, (name, answer)
        assert answer["event"] == event, (name, answer)
        if outcome == "ignored":
            assert r.status_code == 200
            continue
        if outcome == "filtered":
            assert r.status_code == 202
            assert answer["rule"] == "event"
            continue
        assert r.status_code == 201, (name, answer)
        build = await stack.build(answer["build"])
        assert build["trigger"] == "webhook"
        assert build["trigger_id"] == triggers[key]["id"]
        assert (build["branch"], build["sha"], build["initiator"]) == (branch, revision, initiator)
        variables = build["variables"]
        assert variables["CF_BRANCH"] == branch
        assert variables["CF_REVISION"] == revision
        assert variables["CF_BUILD_INITIATOR"] == initiator
        assert variables["CF_BUILD_TRIGGER"] == "webhook"
        assert variables["CF_REPO_NAME"] == repo.split("/")[-1]
        assert (variables["FROM_PIPELINE"], variables["SHARED"]) == ("p", "trigger")
        if event.startswith("pullrequest."):
            assert variables["CF_PULL_REQUEST_NUMBER"]
        row = await build_row(stack, answer["build"])
        assert row.event == json.loads(fixture(provider, name))
    builds_made = sum(1 for case in CASES if case[3] == "build")
    assert await count(stack, Build) == builds_made
    assert await count(stack, Delivery) == len(CASES)


async def test_the_runner_task_carries_branch_revision_and_the_raw_payload(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    answer = (await deliver(stack, trigger, GITHUB_PUSH)).json()
    task = await claim(stack, runner.runner_token)
    assert task.build_id == answer["build"]
    assert (task.branch, task.revision) == ("master", "63738bb582c8b540af7bcfc18f87c575c3ed66e0")
    assert (task.trigger, task.initiator) == ("webhook", "jessesuen")
    assert task.event == json.loads(fixture("github", GITHUB_PUSH))


async def test_event_variables_override_trigger_variables_which_override_pipeline_variables(stack: Stack) -> None:
    await stack.pipeline("app", HELLO, variables={"A": "pipeline", "B": "pipeline", "CF_BRANCH": "pipeline"})
    trigger = await add_trigger(stack, variables={"B": "trigger", "CF_BRANCH": "trigger"})
    answer = (await deliver(stack, trigger, GITHUB_PUSH)).json()
    variables = (await stack.build(answer["build"]))["variables"]
    assert (variables["A"], variables["B"], variables["CF_BRANCH"]) == ("pipeline", "trigger", "master")


@pytest.mark.parametrize("provider", ["github", "gitlab", "bitbucket-server"])
async def test_a_wrong_secret_a_missing_signature_or_a_tampered_body_gets_401_and_creates_nothing(
    stack: Stack, provider: str
) -> None:
    name, repo = {
        "github": (GITHUB_PUSH, "jessesuen/test-repo"),
        "gitlab": ("doc-push-hook", "mike/diaspora"),
        "bitbucket-server": ("repo-refs-changed-branch-update", "MYPROJECT/test-repo"),
    }[provider]
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, provider=provider, repo=repo)
    body = fixture(provider, name)
    auth_header = {"github": "X-Hub-Signature-256", "gitlab": "X-Gitlab-Token", "bitbucket-server": "X-Hub-Signature"}
    wrong = signed(provider, body, "not-the-secret")[auth_header[provider]]
    tampered = body.replace(b"master", b"mister", 1)
    assert tampered != body
    async with stack.raw() as c:
        path = trigger["endpoint"].removeprefix("http://outpost.test")
        headers = {"Content-Type": "application/json", **event_header(provider, name, body)}
        missing = await c.post(path, content=body, headers=headers)
    answers = [
        missing,
        await deliver(stack, trigger, name, **{auth_header[provider]: wrong}),
        await deliver(stack, trigger, name, body=tampered, **{auth_header[provider]: wrong}),
    ]
    if provider != "gitlab":  # GitLab sends its token as-is, no HMAC: TLS is what keeps its body intact
        # A body changed after signing: the signature of the original body no longer fits.
        original = signed(provider, body, trigger["secret"])
        answers.append(await deliver(stack, trigger, name, body=tampered, **original))
    for r in answers:
        assert r.status_code == 401, r.text
        assert r.json()["outcome"] == "rejected"
    assert await count(stack, Build) == 0
    deliveries = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert [d["outcome"] for d in deliveries] == ["rejected"] * len(answers)
    assert all(d["delivery_id"] is None and d["status_code"] == 401 and d["reason"] for d in deliveries)


async def test_a_redelivery_gets_the_same_answer_and_no_second_build(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    delivery = str(uuid.uuid4())
    body = fixture("github", GITHUB_PUSH)
    first = await deliver(stack, trigger, GITHUB_PUSH, **signed("github", body, trigger["secret"], delivery))
    again = await deliver(stack, trigger, GITHUB_PUSH, **signed("github", body, trigger["secret"], delivery))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["outpost-redelivery"] == "true"
    assert await count(stack, Build) == 1
    assert await count(stack, Delivery) == 1


async def test_a_redelivery_of_a_filtered_event_is_still_filtered_after_the_trigger_changes(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, branch_regex="/^release$/")
    body = fixture("github", GITHUB_PUSH)
    headers = signed("github", body, trigger["secret"], "the-delivery")
    first = await deliver(stack, trigger, GITHUB_PUSH, **headers)
    assert first.json()["rule"] == "branch"
    await stack.api("PATCH", f"/triggers/{trigger['id']}", json={"branch_regex": None})
    again = await deliver(stack, trigger, GITHUB_PUSH, **headers)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert await count(stack, Build) == 0
    fresh = await deliver(stack, trigger, GITHUB_PUSH)
    assert fresh.json()["outcome"] == "build"


async def test_a_rejected_delivery_does_not_claim_its_delivery_id(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    body = fixture("github", GITHUB_PUSH)
    forged = signed("github", body, "guessed-secret", "real-id")
    assert (await deliver(stack, trigger, GITHUB_PUSH, **forged)).status_code == 401
    genuine = await deliver(stack, trigger, GITHUB_PUSH, **signed("github", body, trigger["secret"], "real-id"))
    assert genuine.status_code == 201


async def test_an_oversized_body_gets_413_and_creates_nothing(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    huge = b'{"padding": "' + b"x" * (25 * 1024 * 1024) + b'"}'
    r = await deliver(stack, trigger, GITHUB_PUSH, body=huge)
    assert r.status_code == 413
    assert await count(stack, Build) == 0


async def test_a_body_larger_than_other_requests_may_be_is_still_accepted(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    payload = json.loads(fixture("github", GITHUB_PUSH))
    payload["padding"] = "x" * (stack.services.settings.max_request_body + 1)
    r = await deliver(stack, trigger, GITHUB_PUSH, body=json.dumps(payload).encode())
    assert r.status_code == 201, r.text[:300]


async def test_malformed_json_gets_400_and_a_delivery_record(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    for body in (b"{not json", b"[1, 2]"):
        r = await deliver(stack, trigger, GITHUB_PUSH, body=body)
        assert r.status_code == 400, r.text
        assert r.json()["outcome"] == "rejected"
    deliveries = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert [(d["outcome"], d["status_code"], d["rule"]) for d in deliveries] == [("rejected", 400, "json")] * 2
    assert await count(stack, Build) == 0


async def test_a_github_ping_answers_200_and_builds_nothing(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, repo="Octocoders/Hello-World")
    r = await deliver(stack, trigger, "ping")
    assert r.status_code == 200
    assert r.json()["outcome"] == "ignored"
    assert await count(stack, Build) == 0


async def test_an_unsupported_event_answers_202_with_the_reason(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    r = await deliver(stack, trigger, GITHUB_PUSH, X_GitHub_Event="issues")
    assert r.status_code == 202
    assert r.json()["outcome"] == "ignored"
    deliveries = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert deliveries[0]["event"] == "issues"
    assert "issues" in deliveries[0]["reason"]


async def test_a_disabled_trigger_records_the_delivery_as_filtered(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, disabled=True)
    r = await deliver(stack, trigger, GITHUB_PUSH)
    assert r.status_code == 202
    assert (r.json()["outcome"], r.json()["rule"], r.json()["reason"]) == ("filtered", "disabled", "trigger disabled")
    assert await count(stack, Build) == 0


async def test_a_filter_that_refuses_is_recorded_with_its_rule_and_reason(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, branch_regex="/^release-.*/i")
    r = await deliver(stack, trigger, GITHUB_PUSH)
    assert r.status_code == 202
    deliveries = (await stack.api("GET", f"/triggers/{trigger['id']}/deliveries")).json()
    assert (deliveries[0]["outcome"], deliveries[0]["rule"]) == ("filtered", "branch")
    assert "master" in deliveries[0]["reason"]


async def test_a_skip_marker_in_the_commit_message_builds_nothing(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    payload = json.loads(fixture("github", GITHUB_PUSH))
    payload["head_commit"]["message"] = "Fix the docs [skip ci]"
    r = await deliver(stack, trigger, GITHUB_PUSH, body=json.dumps(payload).encode())
    assert (r.json()["outcome"], r.json()["rule"]) == ("filtered", "skip-marker")
    assert await count(stack, Build) == 0


async def test_a_glob_on_an_incomplete_file_list_without_a_git_integration_is_filtered_and_says_why(
    stack: Stack,
) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, repo="Codertocat/Hello-World", modified_files_glob="{src/**,docs/*}")
    r = await deliver(stack, trigger, "pull_request-opened")
    answer = r.json()
    assert (answer["outcome"], answer["rule"]) == ("filtered", "files")
    assert "does not list every changed file" in answer["reason"]
    assert answer["reason"].endswith(NO_INTEGRATION)  # with one, a runner computes them (test_changedfiles.py)


async def test_an_unknown_trigger_is_404(stack: Stack) -> None:
    async with stack.raw() as c:
        r = await c.post("/webhooks/" + "0" * 32, content=b"{}")
    assert r.status_code == 404
    assert await count(stack, Delivery) == 0


async def test_a_rotated_secret_replaces_the_old_one_at_once(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    rotated = (await stack.api("POST", f"/triggers/{trigger['id']}/rotate-secret")).json()
    assert rotated["secret"] != trigger["secret"]
    assert (await deliver(stack, trigger, GITHUB_PUSH)).status_code == 401
    assert (await deliver(stack, rotated, GITHUB_PUSH)).status_code == 201


async def test_concurrency_one_keeps_the_second_build_queued_until_the_first_finishes(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, concurrency=1)
    first = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
    second = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
    await stack.pipeline("other", HELLO)
    unrelated = (await stack.run("other"))["id"]

    task = await claim(stack, runner.runner_token)
    assert task.build_id == first
    await job_call(stack, task, "POST", "/started", json={"steps": []})
    # The trigger is at its limit: the next claim skips its queued build and takes the unrelated one.
    assert (await claim(stack, runner.runner_token)).build_id == unrelated
    assert (await poll(stack, runner.runner_token)).status_code == 204
    assert (await stack.build(second))["status"] == "queued"

    assert (await job_call(stack, task, "POST", "/finish", json={"status": "success"})).status_code == 200
    assert (await claim(stack, runner.runner_token)).build_id == second


async def test_terminate_previous_cancels_the_older_builds_of_the_same_branch(stack: Stack) -> None:
    runner = await stack.register()
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, termination_policy="terminate-previous-same-branch")
    running = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
    task = await claim(stack, runner.runner_token)
    await job_call(stack, task, "POST", "/started", json={"steps": []})
    queued = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
    tag = (await deliver(stack, trigger, "push-tag-created")).json()["build"]  # another "branch": v1.0
    newest = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]

    assert (await stack.build(running))["cancel_requested"] is True
    assert (await job_call(stack, task, "POST", "/heartbeat")).json()["cancel_requested"] is True
    stopped = await stack.build(queued)
    assert stopped["status"] == "terminated"
    assert newest in stopped["message"]
    assert (await stack.build(tag))["status"] == "queued"
    assert (await stack.build(newest))["status"] == "queued"
    assert (await stack.build(newest))["cancel_requested"] is False


async def test_without_a_termination_policy_older_builds_go_on(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    first = (await deliver(stack, trigger, GITHUB_PUSH)).json()["build"]
    await deliver(stack, trigger, GITHUB_PUSH)
    assert (await stack.build(first))["status"] == "queued"


async def test_the_same_delivery_arriving_twice_at_once_makes_one_build(stack: Stack) -> None:
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack)
    body = fixture("github", GITHUB_PUSH)
    headers = signed("github", body, trigger["secret"], "twice-at-once")
    answers = await asyncio.gather(*(deliver(stack, trigger, GITHUB_PUSH, **headers) for _ in range(4)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["build"] for r in answers}) == 1
    assert await count(stack, Build) == 1


async def test_runners_claiming_at_once_never_exceed_a_triggers_concurrency(stack: Stack) -> None:
    runners = [await stack.register() for _ in range(4)]
    await stack.pipeline("app", HELLO)
    trigger = await add_trigger(stack, concurrency=2)
    for _ in range(4):
        await deliver(stack, trigger, GITHUB_PUSH)
    answers = await asyncio.gather(*(poll(stack, r.runner_token) for r in runners))
    assert sorted(r.status_code for r in answers) == [200, 200, 204, 204]
