"""Every shared webhook payload, signed and replayed through its provider's `verify` and `parse`."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
from typing import Any

import pytest

from outpost.triggers import bitbucket_server, github, gitlab
from outpost.triggers.event import PROVIDERS, GitEvent, Provider
from outpost.triggers.providers import (
    SKIP_MARKERS,
    PayloadError,
    SignatureError,
    UnsupportedEvent,
    delivery_id,
    has_skip_marker,
)
from outpost.triggers.registry import PROVIDER_MODULES
from outpost.triggers.variables import build_variables
from tests.triggers import WEBHOOKS, webhook_fixture

SECRET = "It's a Secret to Everybody"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

GH_FORCED = "63738bb582c8b540af7bcfc18f87c575c3ed66e0"
GH_PR_HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
GL_MR_HEAD = "c4c79227ed610f1151f05bbc5be33b4f340d39c8"

# The event header a sender would use for each file (PROVENANCE.md) and the event we must read from it,
# every field written out from the file itself.
EXPECTED: dict[str, tuple[str, GitEvent]] = {
    "github/push-branch-forced-with-commits.json": (
        "push",
        GitEvent(
            provider="github",
            event="push.heads",
            repo="jessesuen/test-repo",
            branch="master",
            before="d5c1ffa8e294bc18c639bfb4e0df499251034414",
            after=GH_FORCED,
            commit_author="Jesse Suen",
            commit_message="Add staging-argocd-demo environment",
            commit_url=f"https://github.com/jessesuen/test-repo/commit/{GH_FORCED}",
            initiator="jessesuen",
            clone_url="https://github.com/jessesuen/test-repo.git",
            changed_files=None,  # forced: the dropped commits changed files too
        ),
    ),
    "github/push-tag-created.json": (
        "push",
        GitEvent(
            provider="github",
            event="push.tags",
            repo="jessesuen/test-repo",
            branch="v1.0",
            tag="v1.0",
            after=GH_FORCED,
            created=True,
            commit_author="Jesse Suen",
            commit_message="Add staging-argocd-demo environment",
            commit_url=f"https://github.com/jessesuen/test-repo/commit/{GH_FORCED}",
            initiator="jessesuen",
            clone_url="https://github.com/jessesuen/test-repo.git",
            base_branch="master",
        ),
    ),
    "github/push-branch-created.json": (
        "push",
        GitEvent(
            provider="github",
            event="push.newBranch",
            repo="Codertocat/Hello-World",
            branch="master",
            after="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            created=True,
            commit_author="Codertocat",
            commit_message="Initial commit",
            commit_url="https://github.com/Codertocat/Hello-World/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            initiator="Codertocat",
            clone_url="https://github.com/Codertocat/Hello-World.git",
        ),
    ),
    "github/ping.json": (
        "ping",
        GitEvent(provider="github", event="ping", repo="Octocoders/Hello-World", initiator="Codertocat"),
    ),
    "github/pull_request-opened.json": (
        "pull_request",
        GitEvent(
            provider="github",
            event="pullrequest.opened",
            repo="Codertocat/Hello-World",
            branch="changes",
            after=GH_PR_HEAD,
            pr_number=2,
            pr_title="Update the README with new information.",
            pr_action="opened",
            pr_source_branch="changes",
            pr_target_branch="master",
            pr_labels=["bug"],
            commit_url=f"https://github.com/Codertocat/Hello-World/commit/{GH_PR_HEAD}",
            initiator="Codertocat",
            clone_url="https://github.com/Codertocat/Hello-World.git",
        ),
    ),
    "github/pull_request-synchronize.json": (
        "pull_request",
        GitEvent(
            provider="github",
            event="pullrequest.synchronize",
            repo="Codertocat/Hello-World",
            branch="changes",
            before="f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            after=GH_PR_HEAD,
            pr_number=2,
            pr_title="Update the README with new information.",
            pr_action="synchronize",
            pr_source_branch="changes",
            pr_target_branch="master",
            pr_labels=["bug"],
            commit_url=f"https://github.com/Codertocat/Hello-World/commit/{GH_PR_HEAD}",
            initiator="Codertocat",
            clone_url="https://github.com/Codertocat/Hello-World.git",
        ),
    ),
    "github/pull_request-closed-not-merged.json": (
        "pull_request",
        GitEvent(
            provider="github",
            event="pullrequest.unmerged-closed",
            repo="Codertocat/Hello-World",
            branch="changes",
            after=GH_PR_HEAD,
            pr_number=2,
            pr_title="Update the README with new information.",
            pr_action="closed",
            pr_source_branch="changes",
            pr_target_branch="master",
            pr_labels=["bug"],
            pr_merged_commit=None,  # the payload's merge_commit_sha is GitHub's test merge, never merged
            commit_url=f"https://github.com/Codertocat/Hello-World/commit/{GH_PR_HEAD}",
            initiator="Codertocat",
            clone_url="https://github.com/Codertocat/Hello-World.git",
        ),
    ),
    "gitlab/doc-push-hook.json": (
        "Push Hook",
        GitEvent(
            provider="gitlab",
            event="push.heads",
            repo="mike/diaspora",
            branch="master",
            before="95790bf891e76fee5e1747ab589903a6a1f80f22",
            after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            commit_author="GitLab dev user",
            commit_message="fixed readme",
            commit_url="http://example.com/mike/diaspora/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            initiator="jsmith",
            clone_url="http://example.com/mike/diaspora.git",
            changed_files=None,  # total_commits_count 4, two listed
        ),
    ),
    "gitlab/doc-tag-push-hook.json": (
        "Tag Push Hook",
        GitEvent(
            provider="gitlab",
            event="push.tags",
            repo="jsmith/example",
            branch="v1.0.0",
            tag="v1.0.0",
            after="82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            created=True,
            initiator="John Smith",
            clone_url="http://example.com/jsmith/example.git",
        ),
    ),
    "gitlab/doc-merge-request-hook-open.json": (
        "Merge Request Hook",
        GitEvent(
            provider="gitlab",
            event="pullrequest.opened",
            repo="gitlabhq/gitlab-test",
            branch="ms-viewport",
            after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            pr_number=1,
            pr_title="MS-Viewport",
            pr_action="open",
            pr_source_branch="ms-viewport",
            pr_target_branch="master",
            pr_labels=["API"],
            commit_author="GitLab dev user",
            commit_message="fixed readme",
            commit_url="http://example.com/awesome_space/awesome_project/commits/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            initiator="root",
            clone_url="http://example.com/awesome_space/awesome_project.git",
        ),
    ),
    "gitlab/merge-request-hook-update-oldrev.json": (
        "Merge Request Hook",
        GitEvent(
            provider="gitlab",
            event="pullrequest.synchronize",
            repo="gitlab-org/hello-world",
            branch="feature",
            before="2ee77db7e47fecd07229e021ef89e5d46cd4f5dd",
            after=GL_MR_HEAD,
            pr_number=1,
            pr_title="update readme",
            pr_action="update",
            pr_source_branch="feature",
            pr_target_branch="master",
            pr_labels=["API"],
            commit_author="Sid Sijbrandij",
            commit_message="update readme\n",
            commit_url=f"https://gitlab.com/gitlab-org/hello-world/commit/{GL_MR_HEAD}",
            initiator="sytses",
            clone_url="https://gitlab.com/gitlab-org/hello-world.git",
        ),
    ),
    "gitlab/merge-request-hook-merge.json": (
        "Merge Request Hook",
        GitEvent(
            provider="gitlab",
            event="pullrequest.merged",
            repo="gitlab-org/hello-world",
            branch="feature",
            after=GL_MR_HEAD,
            pr_number=1,
            pr_title="update readme",
            pr_action="merge",
            pr_source_branch="feature",
            pr_target_branch="master",
            pr_merged=True,
            pr_merged_commit="78a76ee6b4992a6baf64c59fc4c44c7323d60438",
            commit_author="Sid Sijbrandij",
            commit_message="update readme\n",
            commit_url=f"https://gitlab.com/gitlab-org/hello-world/commit/{GL_MR_HEAD}",
            initiator="sytses",
            clone_url="https://gitlab.com/gitlab-org/hello-world.git",
        ),
    ),
    "gitlab/push-hook-branch-deleted.json": (
        "Push Hook",
        GitEvent(
            provider="gitlab",
            event="push.deleteBranch",
            repo="gitlab-org/hello-world",
            branch="feature",
            before=GL_MR_HEAD,
            deleted=True,
            initiator="sytses",
            clone_url="https://gitlab.com/gitlab-org/hello-world.git",
            changed_files=[],
        ),
    ),
    "bitbucket-server/repo-refs-changed-branch-update.json": (
        "repo:refs_changed",
        GitEvent(
            provider="bitbucket-server",
            event="push.heads",
            repo="MYPROJECT/test-repo",
            branch="master",
            before="f09c8889a2d234985734958795a31589cd91ffda",
            after="22671f0349857934857983457983475ec39f196b",
            commit_url="https://bitbucketserver/projects/MYPROJECT/repos/test-repo/commits/22671f0349857934857983457983475ec39f196b",
            initiator="john",
            clone_url="https://bitbucketserver/scm/myproject/test-repo.git",
        ),
    ),
    "bitbucket-server/repo-refs-changed-branch-delete.json": (
        "repo:refs_changed",
        GitEvent(
            provider="bitbucket-server",
            event="push.deleteBranch",
            repo="AMUNIZ/test-repos",
            branch="feature/BB-1",
            before="fb522a6f08c7c7df337312e4e65ec1b57710672e",
            deleted=True,
            initiator="admin",
            clone_url="http://localhost:7990/bitbucket/scm/amuniz/test-repos.git",
            changed_files=[],
        ),
    ),
    "bitbucket-server/repo-refs-changed-tag-created.json": (
        "repo:refs_changed",
        GitEvent(
            provider="bitbucket-server",
            event="push.tags",
            repo="AMUNIZ/test-repos",
            branch="simple-tag",
            tag="simple-tag",
            after="fb522a6f08c7c7df337312e4e65ec1b57710672e",
            created=True,
            commit_author="Antonio Muniz",
            commit_message="Suppress echo command part",
            commit_url="http://localhost:7990/bitbucket/projects/AMUNIZ/repos/test-repos/commits/fb522a6f08c7c7df337312e4e65ec1b57710672e",
            initiator="admin",
            clone_url="http://localhost:7990/bitbucket/scm/amuniz/test-repos.git",
        ),
    ),
    "bitbucket-server/repo-refs-changed-personal-project-branch-delete.json": (
        "repo:refs_changed",
        GitEvent(
            provider="bitbucket-server",
            event="push.deleteBranch",
            repo="~gopher/webhook-test",
            branch="feature/wip",
            before="32a0b8a740c2963c6f56bd8baf3dc05683d299e0",
            deleted=True,
            initiator="gopher",
            clone_url="https://server.bitbucket.local/scm/~gopher/webhook-test.git",
            changed_files=[],
        ),
    ),
    "bitbucket-server/pr-opened.json": (
        "pr:opened",
        GitEvent(
            provider="bitbucket-server",
            event="pullrequest.opened",
            repo="PRJ/my-repo",
            branch="develop",
            after="208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e",
            pr_number=2,
            pr_title="added LICENSE",
            pr_action="opened",
            pr_source_branch="develop",
            pr_target_branch="master",
            initiator="jcitizen",
        ),
    ),
    "bitbucket-server/pr-merged.json": (
        "pr:merged",
        GitEvent(
            provider="bitbucket-server",
            event="pullrequest.merged",
            repo="PRJ/my-repo",
            branch="develop",
            after="b9eaed50a03c073b20dfa82e5e753d295e7f0e56",
            pr_number=3,
            pr_title="Develop",
            pr_action="merged",
            pr_source_branch="develop",
            pr_target_branch="master",
            pr_merged=True,
            pr_merged_commit="83f836ca538dc4f43d29fda46a5b85ea49f1b8e7",
            initiator="jcitizen",
        ),
    ),
    "bitbucket-server/pr-from-ref-updated.json": (
        "pr:from_ref_updated",
        GitEvent(
            provider="bitbucket-server",
            event="pullrequest.synchronize",
            repo="DSO/test-app",
            branch="feature/test",
            before="d256b2cfb75eac432cc0a3bfdd681d2db37117a9",
            after="ae17c5f68ea2e503a8ee40931f4a2c90db2ebe8e",
            pr_number=4,
            pr_title="Feature/test",
            pr_action="from_ref_updated",
            pr_source_branch="feature/test",
            pr_target_branch="main",
            commit_url="https://bitbucket.example.com/projects/DSO/repos/test-app/commits/ae17c5f68ea2e503a8ee40931f4a2c90db2ebe8e",
            initiator="example",
            clone_url="https://bitbucket.example.com/scm/dso/test-app.git",
        ),
    ),
}

EVENT_HEADERS: dict[Provider, str] = {
    "github": "X-GitHub-Event",
    "gitlab": "X-Gitlab-Event",
    "bitbucket-server": "X-Event-Key",
}
DELIVERY_HEADERS: dict[Provider, str] = {
    "github": "X-GitHub-Delivery",
    "gitlab": "X-Gitlab-Event-UUID",
    "bitbucket-server": "X-Request-Id",
}


def signed(provider: Provider, event: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    """The headers the provider would send with `body`, signed with `secret`."""
    headers = {EVENT_HEADERS[provider]: event, DELIVERY_HEADERS[provider]: DELIVERY}
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if provider == "github":
        headers["X-Hub-Signature-256"] = f"sha256={digest}"
    elif provider == "gitlab":
        headers["X-Gitlab-Token"] = secret
    else:
        headers["X-Hub-Signature"] = f"sha256={digest}"
    return headers


def provider_of(name: str) -> Provider:
    folder = name.split("/")[0]
    return next(provider for provider in PROVIDERS if provider == folder)


def load(name: str) -> tuple[Provider, dict[str, str], bytes, dict[str, Any]]:
    body = webhook_fixture(name)
    provider = provider_of(name)
    return provider, signed(provider, EXPECTED[name][0], body), body, json.loads(body)


# Every shared payload


def test_every_shared_payload_has_an_expected_event() -> None:
    if not WEBHOOKS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no webhook payloads in {WEBHOOKS}; CI must run with the shared fixtures")
        pytest.skip(f"shared fixtures absent: {WEBHOOKS}")
    on_disk = {str(path.relative_to(WEBHOOKS)) for path in WEBHOOKS.glob("*/*.json")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_shared_payload_verifies_and_parses_to_its_event(name: str) -> None:
    provider, headers, body, payload = load(name)
    module = PROVIDER_MODULES[provider]
    module.verify(headers, body, SECRET)
    event = module.parse(headers, payload)
    expected = copy.deepcopy(EXPECTED[name][1])
    expected.delivery_id = DELIVERY
    expected.payload = payload
    assert event == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_shared_payload_is_refused_with_a_wrong_secret_or_a_changed_body(name: str) -> None:
    provider, headers, body, _ = load(name)
    module = PROVIDER_MODULES[provider]
    with pytest.raises(SignatureError):
        module.verify(signed(provider, EXPECTED[name][0], body, secret="not the secret"), body, SECRET)
    if provider != "gitlab":  # GitLab's token does not sign the body
        with pytest.raises(SignatureError, match="signature does not match"):
            module.verify(headers, body.replace(b"{", b"{ ", 1), SECRET)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_shared_payload_is_accepted_with_lower_case_header_names(name: str) -> None:
    provider, headers, body, payload = load(name)
    lower = {key.lower(): value for key, value in headers.items()}
    PROVIDER_MODULES[provider].verify(lower, body, SECRET)
    assert PROVIDER_MODULES[provider].parse(lower, payload).delivery_id == DELIVERY


# Signatures


@pytest.mark.parametrize(
    ("module", "header_name"),
    [(github, "X-Hub-Signature-256"), (gitlab, "X-Gitlab-Token"), (bitbucket_server, "X-Hub-Signature")],
)
def test_a_delivery_without_its_signature_header_names_the_header(module: Any, header_name: str) -> None:
    with pytest.raises(SignatureError, match=f"missing {header_name} header"):
        module.verify({"Content-Type": "application/json"}, b"{}", SECRET)


@pytest.mark.parametrize("module", [github, gitlab, bitbucket_server])
def test_a_trigger_without_a_secret_accepts_no_delivery(module: Any) -> None:
    with pytest.raises(SignatureError, match="no webhook secret"):
        module.verify({"X-Hub-Signature-256": "sha256=00", "X-Gitlab-Token": "", "X-Hub-Signature": "x"}, b"{}", "")


@pytest.mark.parametrize("value", ["sha1=0123", "0123abcd", "sha256="])
def test_a_signature_of_another_form_is_refused(value: str) -> None:
    with pytest.raises(SignatureError, match="not of the form sha256=<hex>"):
        github.verify({"X-Hub-Signature-256": value}, b"{}", SECRET)
    with pytest.raises(SignatureError, match="not of the form sha256=<hex>"):
        bitbucket_server.verify({"X-Hub-Signature": value}, b"{}", SECRET)


def test_a_signature_in_upper_case_hex_is_accepted() -> None:
    digest = hmac.new(SECRET.encode(), b"{}", hashlib.sha256).hexdigest().upper()
    github.verify({"X-Hub-Signature-256": f"sha256={digest}"}, b"{}", SECRET)


def test_a_wrong_gitlab_token_is_refused() -> None:
    with pytest.raises(SignatureError, match="X-Gitlab-Token does not match"):
        gitlab.verify({"X-Gitlab-Token": "guess"}, b"{}", SECRET)


# Events we do not build


@pytest.mark.parametrize(
    ("module", "headers", "reason"),
    [
        (github, {"X-GitHub-Event": "create"}, "GitHub event 'create' is not a trigger event"),
        (github, {}, "missing X-GitHub-Event header"),
        (gitlab, {"X-Gitlab-Event": "Pipeline Hook"}, "GitLab event 'Pipeline Hook' is not a trigger event"),
        (gitlab, {}, "missing X-Gitlab-Event header"),
        (bitbucket_server, {"X-Event-Key": "repo:forked"}, "Bitbucket Server event 'repo:forked' is not"),
        (bitbucket_server, {}, "missing X-Event-Key header"),
    ],
)
def test_an_unknown_event_is_unsupported_with_a_reason(module: Any, headers: dict[str, str], reason: str) -> None:
    with pytest.raises(UnsupportedEvent) as caught:
        module.parse(headers, {})
    assert caught.value.reason.startswith(reason)


def test_a_github_pull_request_action_we_do_not_build_is_unsupported() -> None:
    _, headers, _, payload = load("github/pull_request-opened.json")
    payload["action"] = "assigned"
    with pytest.raises(UnsupportedEvent, match="pull_request action 'assigned' is not a trigger event"):
        github.parse(headers, payload)


def test_a_deleted_github_tag_builds_nothing() -> None:
    _, headers, _, payload = load("github/push-tag-created.json")
    payload.update(created=False, deleted=True, after="0" * 40, head_commit=None)
    with pytest.raises(UnsupportedEvent, match=re.escape("tag 'v1.0' was deleted")):
        github.parse(headers, payload)


def test_a_deleted_gitlab_tag_builds_nothing() -> None:
    _, headers, _, payload = load("gitlab/doc-tag-push-hook.json")
    payload.update(before=payload["after"], after="0" * 40, checkout_sha=None)
    with pytest.raises(UnsupportedEvent, match=re.escape("tag 'v1.0.0' was deleted")):
        gitlab.parse(headers, payload)


def test_a_push_to_a_ref_that_is_neither_branch_nor_tag_is_unsupported() -> None:
    _, headers, _, payload = load("github/push-branch-forced-with-commits.json")
    payload["ref"] = "refs/notes/commits"
    with pytest.raises(UnsupportedEvent, match="neither a branch nor a tag"):
        github.parse(headers, payload)


def test_a_payload_without_its_repository_is_a_payload_error() -> None:
    _, headers, _, payload = load("github/push-branch-forced-with-commits.json")
    del payload["repository"]
    with pytest.raises(PayloadError, match=re.escape("`repository.full_name` is missing")):
        github.parse(headers, payload)


def test_a_payload_field_of_the_wrong_type_is_a_payload_error() -> None:
    _, headers, _, payload = load("gitlab/merge-request-hook-merge.json")
    payload["object_attributes"]["iid"] = "1"
    with pytest.raises(PayloadError, match="`iid` is not an integer"):
        gitlab.parse(headers, payload)


# GitHub events without a shared payload, and variants of the shared ones


def test_a_merged_github_pull_request_is_named_merged_and_keeps_its_merge_commit() -> None:
    _, headers, _, payload = load("github/pull_request-closed-not-merged.json")
    payload["pull_request"]["merged"] = True
    event = github.parse(headers, payload)
    assert (event.event, event.pr_action, event.pr_merged) == ("pullrequest.merged", "closed", True)
    assert event.pr_merged_commit == "c4295bd74fb0f4fda03689c3df3f2803b658fd85"


def test_a_github_pull_request_from_another_repository_is_a_fork() -> None:
    _, headers, _, payload = load("github/pull_request-opened.json")
    payload["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World"
    payload["pull_request"]["head"]["repo"]["clone_url"] = "https://github.com/mallory/Hello-World.git"
    event = github.parse(headers, payload)
    assert event.pr_fork is True
    assert event.clone_url == "https://github.com/mallory/Hello-World.git"
    payload["pull_request"]["head"]["repo"] = None  # the fork was deleted
    assert github.parse(headers, payload).pr_fork is True


def test_a_github_push_lists_its_changed_files_when_the_commits_are_complete() -> None:
    _, headers, _, payload = load("github/push-branch-forced-with-commits.json")
    payload["forced"] = False
    assert github.parse(headers, payload).changed_files == [
        "ksapps/test-app/app.yaml",
        "ksapps/test-app/environments/staging-argocd-demo/main.jsonnet",
        "ksapps/test-app/environments/staging-argocd-demo/params.libsonnet",
    ]
    payload["commits"] = payload["commits"] * github.COMMITS_CAP  # GitHub may have cut the list at 20
    assert github.parse(headers, payload).changed_files is None


def test_a_github_push_of_a_new_branch_has_no_complete_file_list() -> None:
    _, headers, _, payload = load("github/push-branch-created.json")
    assert github.parse(headers, payload).changed_files is None


def test_a_deleted_github_branch_changes_no_file() -> None:
    _, headers, _, payload = load("github/push-branch-forced-with-commits.json")
    payload.update(deleted=True, forced=False, after="0" * 40, commits=[], head_commit=None)
    event = github.parse(headers, payload)
    assert (event.event, event.after, event.changed_files) == ("push.deleteBranch", None, [])


def test_a_github_comment_on_a_pull_request_is_comment_added() -> None:
    payload: dict[str, Any] = {
        "action": "created",
        "issue": {"number": 7, "title": "Fix it", "labels": [{"name": "ci"}], "pull_request": {"url": "u"}},
        "comment": {"body": "/build please", "user": {"login": "octocat"}},
        "repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"},
        "sender": {"login": "octocat"},
    }
    event = github.parse({"X-GitHub-Event": "issue_comment"}, payload)
    assert (event.event, event.pr_number, event.pr_title, event.pr_labels) == (
        "pullrequest.commentAdded",
        7,
        "Fix it",
        ["ci"],
    )
    assert (event.pr_comment, event.pr_comment_author, event.branch, event.after) == (
        "/build please",
        "octocat",
        None,
        None,
    )
    assert event.pr_fork is True  # unknown until the server looks the pull request up
    del payload["issue"]["pull_request"]
    with pytest.raises(UnsupportedEvent, match="not on a pull request"):
        github.parse({"X-GitHub-Event": "issue_comment"}, payload)


def test_a_github_release_is_named_by_its_action_and_builds_its_tag() -> None:
    payload = {
        "action": "published",
        "release": {"id": 1234, "tag_name": "v2.0.0", "name": "Two", "prerelease": True, "target_commitish": "main"},
        "repository": {"full_name": "o/r"},
        "sender": {"login": "octocat"},
    }
    event = github.parse({"X-GitHub-Event": "release"}, payload)
    assert (event.event, event.branch, event.tag, event.after) == ("release.published", "v2.0.0", "v2.0.0", None)
    assert build_variables(event) == {
        "CF_BUILD_TRIGGER": "webhook",
        "CF_BUILD_INITIATOR": "octocat",
        "CF_REPO_OWNER": "o",
        "CF_REPO_NAME": "r",
        "CF_BRANCH": "v2.0.0",
        "CF_BRANCH_TAG_NORMALIZED": "v2.0.0",
        "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": "v2.0.0",
        "CF_RELEASE_NAME": "Two",
        "CF_RELEASE_TAG": "v2.0.0",
        "CF_RELEASE_ID": "1234",
        "CF_PRERELEASE_FLAG": "true",
    }


# GitLab variants


@pytest.mark.parametrize(
    ("action", "event_name"),
    [("close", "pullrequest.unmerged-closed"), ("reopen", "pullrequest.reopened"), ("update", "pullrequest.edited")],
)
def test_a_gitlab_merge_request_action_maps_to_its_event(action: str, event_name: str) -> None:
    _, headers, _, payload = load("gitlab/merge-request-hook-update-oldrev.json")
    payload["object_attributes"].update(action=action, oldrev=None)
    payload["changes"] = {}
    event = gitlab.parse(headers, payload)
    assert (event.event, event.pr_action, event.before, event.pr_merged) == (event_name, action, None, False)


def test_a_gitlab_update_that_adds_a_label_is_labeled() -> None:
    _, headers, _, payload = load("gitlab/merge-request-hook-update-oldrev.json")
    del payload["object_attributes"]["oldrev"]
    assert gitlab.parse(headers, payload).event == "pullrequest.labeled"


def test_a_gitlab_approval_builds_nothing() -> None:
    _, headers, _, payload = load("gitlab/merge-request-hook-merge.json")
    payload["object_attributes"]["action"] = "approved"
    with pytest.raises(UnsupportedEvent, match="merge request action 'approved'"):
        gitlab.parse(headers, payload)


def test_a_gitlab_merge_request_from_another_project_is_a_fork() -> None:
    _, headers, _, payload = load("gitlab/merge-request-hook-merge.json")
    payload["object_attributes"]["source_project_id"] = 1
    assert gitlab.parse(headers, payload).pr_fork is True


def test_a_gitlab_push_lists_its_changed_files_when_every_commit_is_listed() -> None:
    _, headers, _, payload = load("gitlab/doc-push-hook.json")
    payload["total_commits_count"] = len(payload["commits"])
    assert gitlab.parse(headers, payload).changed_files == ["CHANGELOG", "app/controller/application.rb"]


def test_a_gitlab_push_of_a_new_branch_is_new_branch_without_a_file_list() -> None:
    _, headers, _, payload = load("gitlab/doc-push-hook.json")
    payload.update(before="0" * 40, total_commits_count=len(payload["commits"]))
    event = gitlab.parse(headers, payload)
    assert (event.event, event.created, event.changed_files) == ("push.newBranch", True, None)


def test_a_gitlab_note_on_a_merge_request_is_comment_added() -> None:
    payload: dict[str, Any] = {
        "object_kind": "note",
        "user": {"name": "Ann", "username": "ann"},
        "project": {"path_with_namespace": "grp/sub/app"},
        "object_attributes": {"note": "retest", "noteable_type": "MergeRequest"},
        "merge_request": {
            "iid": 9,
            "title": "Draft",
            "source_branch": "topic",
            "target_branch": "main",
            "source_project_id": 5,
            "target_project_id": 5,
            "last_commit": {"id": "a" * 40, "message": "wip", "author": {"name": "Ann"}},
            "labels": [{"title": "backend"}],
        },
    }
    event = gitlab.parse({"X-Gitlab-Event": "Note Hook"}, payload)
    assert (event.event, event.pr_number, event.branch, event.pr_target_branch) == (
        "pullrequest.commentAdded",
        9,
        "topic",
        "main",
    )
    assert (event.pr_comment, event.pr_comment_author, event.pr_labels, event.after) == (
        "retest",
        "ann",
        ["backend"],
        "a" * 40,
    )
    assert build_variables(event)["CF_REPO_OWNER"] == "grp/sub"
    payload["object_attributes"]["noteable_type"] = "Commit"
    with pytest.raises(UnsupportedEvent, match="note on a Commit"):
        gitlab.parse({"X-Gitlab-Event": "Note Hook"}, payload)


# Bitbucket Server variants


def test_a_declined_bitbucket_pull_request_is_unmerged_closed() -> None:
    _, headers, _, payload = load("bitbucket-server/pr-opened.json")
    headers["X-Event-Key"] = "pr:declined"
    event = bitbucket_server.parse(headers, payload)
    assert (event.event, event.pr_action, event.pr_merged) == ("pullrequest.unmerged-closed", "declined", False)


def test_a_bitbucket_comment_is_comment_added() -> None:
    _, headers, _, payload = load("bitbucket-server/pr-opened.json")
    headers["X-Event-Key"] = "pr:comment:added"
    payload["comment"] = {"text": "LGTM, build it", "author": {"name": "reviewer"}}
    event = bitbucket_server.parse(headers, payload)
    assert (event.event, event.pr_comment, event.pr_comment_author) == (
        "pullrequest.commentAdded",
        "LGTM, build it",
        "reviewer",
    )


def test_a_bitbucket_pull_request_from_a_fork_is_a_fork() -> None:
    _, headers, _, payload = load("bitbucket-server/pr-opened.json")
    payload["pullRequest"]["fromRef"]["repository"]["id"] = 99
    assert bitbucket_server.parse(headers, payload).pr_fork is True


def test_a_bitbucket_ping_is_a_ping() -> None:
    event = bitbucket_server.parse({"X-Event-Key": "diagnostics:ping", "X-Request-Id": "r-1"}, {"test": True})
    assert (event.event, event.repo, event.delivery_id) == ("ping", "", "r-1")


def test_a_bitbucket_push_of_several_refs_gives_one_event_per_ref() -> None:
    _, headers, _, payload = load("bitbucket-server/repo-refs-changed-branch-update.json")
    tag_deleted = {
        "ref": {"displayId": "old", "type": "TAG"},
        "fromHash": "1" * 40,
        "toHash": "0" * 40,
        "type": "DELETE",
    }
    new_branch = {
        "ref": {"displayId": "topic", "type": "BRANCH"},
        "fromHash": "0" * 40,
        "toHash": "2" * 40,
        "type": "ADD",
    }
    payload["changes"] = [tag_deleted, *payload["changes"], new_branch]
    events = bitbucket_server.parse_all(headers, payload)
    assert [(e.event, e.branch) for e in events] == [("push.heads", "master"), ("push.newBranch", "topic")]
    assert bitbucket_server.parse(headers, payload).branch == "master"
    payload["changes"] = [tag_deleted]
    with pytest.raises(UnsupportedEvent, match="tag 'old' was deleted"):
        bitbucket_server.parse(headers, payload)


# Shared helpers


def test_delivery_ids_come_from_each_providers_header() -> None:
    assert delivery_id("github", {"x-github-delivery": "g"}) == "g"
    assert delivery_id("gitlab", {"X-Gitlab-Event-UUID": "l"}) == "l"
    assert delivery_id("bitbucket-server", {"X-REQUEST-ID": "b"}) == "b"
    assert delivery_id("github", {}) is None


@pytest.mark.parametrize("marker", SKIP_MARKERS)
def test_every_skip_marker_is_found_in_any_case(marker: str) -> None:
    assert has_skip_marker(f"docs: typo\n\n{marker.upper()}")
    assert not has_skip_marker(marker.strip("[]"))


def test_a_message_without_a_marker_or_no_message_skips_nothing() -> None:
    assert not has_skip_marker("skip ci please")
    assert not has_skip_marker(None)


# Variables


def test_a_shared_push_gives_the_codefresh_variables() -> None:
    _, headers, _, payload = load("github/push-tag-created.json")
    assert build_variables(github.parse(headers, payload)) == {
        "CF_BUILD_TRIGGER": "webhook",
        "CF_BUILD_INITIATOR": "jessesuen",
        "CF_REPO_OWNER": "jessesuen",
        "CF_REPO_NAME": "test-repo",
        "CF_BRANCH": "v1.0",
        "CF_BRANCH_TAG_NORMALIZED": "v1.0",
        "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": "v1.0",
        "CF_BASE_BRANCH": "master",
        "CF_REVISION": GH_FORCED,
        "CF_SHORT_REVISION": "63738bb",
        "CF_COMMIT_AUTHOR": "Jesse Suen",
        "CF_COMMIT_URL": f"https://github.com/jessesuen/test-repo/commit/{GH_FORCED}",
        "CF_COMMIT_MESSAGE": "Add staging-argocd-demo environment",
        "CF_COMMIT_MESSAGE_ESCAPED": "Add staging-argocd-demo environment",
    }


def test_a_shared_merge_gives_the_pull_request_variables() -> None:
    _, headers, _, payload = load("bitbucket-server/pr-merged.json")
    variables = build_variables(bitbucket_server.parse(headers, payload))
    assert {name: value for name, value in variables.items() if "PULL_REQUEST" in name} == {
        "CF_PULL_REQUEST_ACTION": "merged",
        "CF_PULL_REQUEST_ID": "3",
        "CF_PULL_REQUEST_NUMBER": "3",
        "CF_PULL_REQUEST_TARGET": "master",
        "CF_PULL_REQUEST_TITLE": "Develop",
        "CF_PULL_REQUEST_TITLE_ESCAPED": "Develop",
        "CF_PULL_REQUEST_MERGED": "true",
        "CF_PULL_REQUEST_HEAD_BRANCH": "develop",
        "CF_PULL_REQUEST_MERGED_COMMIT_SHA": "83f836ca538dc4f43d29fda46a5b85ea49f1b8e7",
        "CF_PULL_REQUEST_HEAD_COMMIT_SHA": "b9eaed50a03c073b20dfa82e5e753d295e7f0e56",
        "CF_PULL_REQUEST_IS_FORK": "false",
    }
    assert variables["CF_BRANCH"] == "develop"
    assert variables["CF_BASE_BRANCH"] == "master"
    assert "CF_COMMIT_MESSAGE" not in variables  # Bitbucket Server does not send it


def test_labels_are_comma_separated_and_a_branch_is_normalized() -> None:
    event = GitEvent(
        provider="github",
        event="pullrequest.labeled",
        repo="o/r",
        branch="Feature/Login#2",
        pr_number=5,
        pr_labels=["bug", "needs review"],
    )
    variables = build_variables(event)
    assert variables["CF_PULL_REQUEST_LABELS"] == "bug,needs review"
    assert variables["CF_BRANCH_TAG_NORMALIZED"] == "FeatureLogin2"
    assert variables["CF_BRANCH_TAG_NORMALIZED_LOWER_CASE"] == "featurelogin2"
    assert "CF_REVISION" not in variables


def test_a_commit_message_is_given_with_escaped_quotes_and_fully_escaped() -> None:
    event = GitEvent(
        provider="gitlab", event="push.heads", repo="o/r", commit_message="Say \"hi\" & 'bye'\n\t$HOME `x` \\"
    )
    variables = build_variables(event)
    assert variables["CF_COMMIT_MESSAGE"] == "Say \\\"hi\\\" & \\'bye\\'\n\t$HOME `x` \\"
    assert variables["CF_COMMIT_MESSAGE_ESCAPED"] == "Say \\\"hi\\\" & \\'bye\\'\\n\\t\\$HOME \\`x\\` \\\\"
