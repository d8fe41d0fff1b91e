"""Reading a repository without a checkout, against real Git servers: branches, a file at a revision, the files
changed between two revisions, and the errors a user sees (credentials masked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from outpost.git.remote import (
    FileTooLarge,
    GitRemoteError,
    NotFoundInRepo,
    Remote,
    branches,
    changed_files,
    ls_remote,
    read_file,
)
from tests import gitserver
from tests.gitserver import GitHttpServer, Upstream, git

git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
daemon_url, http_git, http_git_auth = gitserver.daemon_url, gitserver.http_git, gitserver.http_git_auth

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "robot", "s3cr3t-Pa55word"


def remote(url: str, tmp_path: Path, **options: object) -> Remote:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path / "home"), "GIT_CONFIG_NOSYSTEM": "1"}
    return Remote(url=url, env=env, **options)  # type: ignore[arg-type]


async def test_branches_lists_every_branch_with_its_head(
    upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    found = await branches(remote(http_git_auth.repo_url(upstream.name), tmp_path, username=USER, password=PASSWORD))
    assert found == {"feature/login": upstream.shas["feature"], "main": upstream.shas["third"]}


async def test_wrong_credentials_give_a_clear_error_without_the_password(
    upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    with pytest.raises(GitRemoteError) as caught:
        await branches(remote(http_git_auth.repo_url(upstream.name), tmp_path, username=USER, password="wrong-Pa55"))
    assert "authentication failed" in str(caught.value)
    assert "wrong-Pa55" not in str(caught.value)


async def test_a_password_in_the_url_is_used_but_never_shown(
    upstream: Upstream, http_git_auth: GitHttpServer, tmp_path: Path
) -> None:
    url = http_git_auth.repo_url(upstream.name).replace("http://", f"http://{USER}:{PASSWORD}@")
    refs = await ls_remote(remote(url, tmp_path), "refs/tags/*")
    assert set(refs) >= {"refs/tags/v0.1", "refs/tags/v1.0"}
    with pytest.raises(NotFoundInRepo) as caught:
        await read_file(remote(url, tmp_path), "no-such-branch", "README.md")
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("revision", "expected", "label"),
    [
        (None, "# App\n", "third"),
        ("main", "# App\n", "third"),
        ("v0.1", "# app\n", "first"),
        ("v1.0", "# app\n", "second"),
    ],
)
async def test_read_file_at_a_branch_tag_or_default(
    upstream: Upstream, http_git: GitHttpServer, tmp_path: Path, revision: str | None, expected: str, label: str
) -> None:
    found = await read_file(remote(http_git.repo_url(upstream.name), tmp_path), revision, "README.md")
    assert found.content.decode() == expected
    assert found.revision == upstream.shas[label]


async def test_read_file_at_a_sha_over_git_daemon(upstream: Upstream, daemon_url: str, tmp_path: Path) -> None:
    url = f"{daemon_url}/{upstream.name}"
    found = await read_file(remote(url, tmp_path), upstream.shas["first"], "./README.md")
    assert (found.revision, found.content) == (upstream.shas["first"], b"# app\n")


async def test_read_file_is_a_shallow_blob_filtered_fetch(
    upstream: Upstream, http_git: GitHttpServer, tmp_path: Path
) -> None:
    """git's own packet trace shows what was asked of the server: one commit deep, no blobs but the one read."""
    trace = tmp_path / "packets.log"
    base = remote(http_git.repo_url(upstream.name), tmp_path)
    traced = Remote(url=base.url, env={**base.env, "GIT_TRACE_PACKET": str(trace)})
    found = await read_file(traced, "main", "README.md")
    assert found.content == b"# App\n"
    sent = trace.read_text(errors="replace")
    assert "filter blob:none" in sent
    assert "deepen 1" in sent
    readme = git("rev-parse", "main:README.md", cwd=upstream.work)
    big = git("rev-parse", "main:big.bin", cwd=upstream.work)
    assert f"want {readme}" in sent  # the one blob, fetched on demand
    assert f"want {big}" not in sent


async def test_a_missing_file_or_revision_is_not_found(
    upstream: Upstream, http_git: GitHttpServer, tmp_path: Path
) -> None:
    url = http_git.repo_url(upstream.name)
    with pytest.raises(NotFoundInRepo, match=r"there is no file nope\.yml"):
        await read_file(remote(url, tmp_path), "main", "nope.yml")
    with pytest.raises(NotFoundInRepo, match="'nope' is not a branch, tag or commit"):
        await read_file(remote(url, tmp_path), "nope", "README.md")
    with pytest.raises(GitRemoteError, match="not a path inside"):
        await read_file(remote(url, tmp_path), "main", "../etc/passwd")


async def test_a_file_larger_than_the_limit_is_refused_with_its_size(
    upstream: Upstream, http_git: GitHttpServer, tmp_path: Path
) -> None:
    with pytest.raises(FileTooLarge) as caught:
        await read_file(remote(http_git.repo_url(upstream.name), tmp_path), "main", "big.bin", max_bytes=100_000)
    assert caught.value.size == 200_000


async def test_changed_files_between_two_revisions(upstream: Upstream, http_git: GitHttpServer, tmp_path: Path) -> None:
    base, head, paths, cut = await changed_files(remote(http_git.repo_url(upstream.name), tmp_path), "v0.1", "main")
    assert (base, head) == (upstream.shas["first"], upstream.shas["third"])
    assert paths == ["README.md", "big.bin", "login.html"]
    assert not cut
    *_, paths, cut = await changed_files(remote(http_git.repo_url(upstream.name), tmp_path), "v0.1", "main", limit=1)
    assert (paths, cut) == (["README.md"], True)


async def test_an_unreachable_server_fails_within_the_time_limit(tmp_path: Path) -> None:
    with pytest.raises(GitRemoteError):
        await branches(remote("http://127.0.0.1:9/acme/app.git", tmp_path), seconds=5)
