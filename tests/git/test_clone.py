"""The git-clone step against real Git servers: smart HTTP with basic auth, git daemon, tinyproxy in between."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from outpost.git.clone import CloneRequest, CloneResult, escape_message
from outpost.git.clone import clone as git_clone
from outpost.git.urls import commit_url, parse_repo_url, repo_dir_name
from tests import gitserver
from tests.components import free_port
from tests.gitserver import GitHttpServer, Tinyproxy, Upstream, create_upstream, git, standard_upstream

# The servers' fixtures, for this module's tests.
git_root, upstream, upstream_template = gitserver.git_root, gitserver.upstream, gitserver.upstream_template
daemon_url = gitserver.daemon_url
http_git, http_git_auth, proxy = gitserver.http_git, gitserver.http_git_auth, gitserver.proxy

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "robot", "s3cr3t-Pa55word"  # what the http_git_auth fixture wants
SECOND_MESSAGE = 'Add the login page\n\nIt has a "remember me" box.\nAnd a\ttab.'


class Log:
    """Collects what the clone writes to its output."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        self.data += chunk

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


def make_request(url: str, tmp_path: Path, *, env: dict[str, str] | None = None, **options: Any) -> CloneRequest:
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path / "home"), "GIT_CONFIG_NOSYSTEM": "1"}
    options.setdefault("retry_delay", 0.1)
    target = tmp_path / "volume" / repo_dir_name(url)
    return CloneRequest(repo=url, target=target, env={**base, **(env or {})}, **options)


async def clone(request: CloneRequest, cancel: asyncio.Event | None = None) -> tuple[CloneResult, Log]:
    log = Log()
    # A clone of these small repositories takes well under a second; failing here, inside the event loop,
    # ends git cleanly, where pytest-timeout's signal could leave the loop waiting for it.
    async with asyncio.timeout(45):
        result = await git_clone(request, log, cancel=cancel)
    return result, log


def in_checkout(request: CloneRequest, *args: str) -> str:
    return git(*args, cwd=request.target)


# --- credentials ---------------------------------------------------------------------------------------------------


async def test_a_clone_over_http_with_basic_auth_checks_out_the_default_branch_and_gives_its_variables(
    tmp_path: Path, upstream: Upstream, http_git_auth: GitHttpServer
) -> None:
    url = http_git_auth.repo_url("acme/app.git")
    request = make_request(url, tmp_path, username=USER, password=PASSWORD)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert result.exit_code == 0
    assert result.workdir == tmp_path / "volume" / "app"
    sha = upstream.shas["third"]
    assert in_checkout(request, "rev-parse", "HEAD") == sha
    assert in_checkout(request, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert in_checkout(request, "rev-parse", "--abbrev-ref", "main@{upstream}") == "origin/main"
    assert (request.target / "README.md").read_text() == "# App\n"
    assert result.variables == {
        "CF_REPO_OWNER": "acme",
        "CF_REPO_NAME": "app",
        "CF_BRANCH": "main",
        "CF_BRANCH_TAG_NORMALIZED": "main",
        "CF_BRANCH_TAG_NORMALIZED_LOWER_CASE": "main",
        "CF_REVISION": sha,
        "CF_SHORT_REVISION": sha[:7],
        "CF_COMMIT_AUTHOR": "Alice Example",
        "CF_COMMIT_MESSAGE": "Fix typo in README",
        "CF_COMMIT_MESSAGE_ESCAPED": "Fix typo in README",
        "CF_COMMIT_URL": f"{http_git_auth.url}/acme/app/commit/{sha}",
    }
    assert http_git_auth.count(user=USER) > 0
    assert in_checkout(request, "config", "--get", "remote.origin.url") == url
    assert PASSWORD not in (request.target / ".git" / "config").read_text()
    assert not [f for f in request.target.rglob("*") if f.is_file() and PASSWORD.encode() in f.read_bytes()]
    assert PASSWORD not in log.text
    assert "$ git clone" in log.text


async def test_credentials_written_into_the_url_are_taken_out_of_it(
    tmp_path: Path, upstream: Upstream, http_git_auth: GitHttpServer
) -> None:
    plain = http_git_auth.repo_url("acme/app.git")
    with_secret = plain.replace("http://", f"http://{USER}:{PASSWORD}@")
    request = make_request(with_secret, tmp_path)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert in_checkout(request, "config", "--get", "remote.origin.url") == plain
    assert PASSWORD not in (request.target / ".git" / "config").read_text()
    assert PASSWORD not in log.text
    assert http_git_auth.count(user=USER) > 0


async def test_the_password_never_shows_in_any_process_arguments(
    tmp_path: Path, upstream: Upstream, http_git_auth: GitHttpServer
) -> None:
    seen: list[str] = []

    async def watch() -> None:
        while True:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    if PASSWORD.encode() in cmdline.read_bytes():
                        seen.append(str(cmdline))
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        request = make_request(http_git_auth.repo_url("acme/app.git"), tmp_path, username=USER, password=PASSWORD)
        result, log = await clone(request)
    finally:
        watcher.cancel()
    assert result.status == "success", log.text
    assert seen == []


@pytest.mark.parametrize(
    ("username", "password"), [(USER, "wrong-Pa55word"), ("intruder", PASSWORD + "x"), (None, None)]
)
async def test_bad_or_missing_credentials_fail_at_once_with_a_clear_message_and_no_secret(
    tmp_path: Path, upstream: Upstream, http_git_auth: GitHttpServer, username: str | None, password: str | None
) -> None:
    url = http_git_auth.repo_url("acme/app.git")
    request = make_request(url, tmp_path, username=username, password=password, retries=3, retry_delay=10.0)
    started = time.monotonic()
    result, log = await clone(request)
    assert time.monotonic() - started < 5  # neither retried nor waiting for a prompt
    assert result.status == "failure"
    assert result.message == f"authentication failed for {url}: check the credentials"
    assert "retrying" not in log.text
    assert result.message in log.text
    for secret in filter(None, (password, PASSWORD)):
        assert secret not in log.text
        assert secret not in result.message
        for file in (tmp_path / "volume").rglob("*"):
            assert not file.is_file() or secret.encode() not in file.read_bytes()


# --- revisions -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [None, 1])
@pytest.mark.parametrize(
    ("revision", "label", "branch", "detached"),
    [
        ("feature/login", "feature", "feature/login", False),
        ("v1.0", "second", "v1.0", True),  # annotated tag, behind main's tip
        ("v0.1", "first", "v0.1", True),  # lightweight tag on the first commit
        ("SHA:first", "first", None, True),
        ("SHA:second", "second", None, True),
    ],
)
async def test_a_branch_a_tag_or_a_sha_is_checked_out_with_or_without_depth(
    tmp_path: Path,
    upstream: Upstream,
    http_git: GitHttpServer,
    revision: str,
    label: str,
    branch: str | None,
    detached: bool,
    depth: int | None,
) -> None:
    sha = upstream.shas[label]
    if revision.startswith("SHA:"):
        revision = sha
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, revision=revision, depth=depth)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert in_checkout(request, "rev-parse", "HEAD") == sha
    assert result.variables["CF_REVISION"] == sha
    assert result.variables["CF_SHORT_REVISION"] == sha[:7]
    assert result.variables.get("CF_BRANCH") == branch
    head = in_checkout(request, "rev-parse", "--abbrev-ref", "HEAD")
    assert head == ("HEAD" if detached else branch)
    if depth == 1:
        assert in_checkout(request, "rev-list", "--count", "HEAD") == "1"
    else:
        assert in_checkout(request, "rev-parse", "--is-shallow-repository") == "false"


async def test_the_variables_describe_the_checked_out_commit(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, revision="v1.0")
    result, log = await clone(request)
    assert result.status == "success", log.text
    sha = git("rev-parse", "v1.0^{commit}", cwd=upstream.bare)
    assert result.variables["CF_REVISION"] == sha
    assert result.variables["CF_COMMIT_AUTHOR"] == git("log", "-1", "--format=%an", sha, cwd=upstream.bare)
    assert result.variables["CF_COMMIT_AUTHOR"] == "Bob Builder"
    assert result.variables["CF_COMMIT_MESSAGE"] == SECOND_MESSAGE
    assert (
        result.variables["CF_COMMIT_MESSAGE_ESCAPED"]
        == r"Add the login page\n\nIt has a \"remember me\" box.\nAnd a\ttab."
    )
    assert result.variables["CF_BRANCH_TAG_NORMALIZED"] == "v1.0"


async def test_a_branch_name_is_normalized_for_docker_tags(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    upstream.switch("Feature/UPPER_case", create_from="main")
    upstream.push("Feature/UPPER_case")
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, revision="Feature/UPPER_case")
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert result.variables["CF_BRANCH"] == "Feature/UPPER_case"
    assert result.variables["CF_BRANCH_TAG_NORMALIZED"] == "FeatureUPPER_case"
    assert result.variables["CF_BRANCH_TAG_NORMALIZED_LOWER_CASE"] == "featureupper_case"


async def test_an_unknown_revision_fails_without_retries(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    url = http_git.repo_url("acme/app.git")
    request = make_request(url, tmp_path, revision="no-such-branch", retry_delay=10.0)
    result, log = await clone(request)
    assert result.status == "failure"
    assert result.message == f"revision 'no-such-branch' is not a branch, tag or commit of {url}"
    # A transient failure of the clone itself may be retried; the missing revision never is.
    missing = log.text.index("couldn't find remote ref")
    assert "retrying" not in log.text[missing:], log.text


async def test_a_missing_repository_fails_without_retries(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    url = http_git.repo_url("acme/nothing.git")
    result, log = await clone(make_request(url, tmp_path, retry_delay=10.0))
    assert result.status == "failure"
    assert result.message == f"git clone failed with exit code 128: fatal: repository '{url}/' not found"
    assert "retrying" not in log.text


async def test_excluding_blobs_makes_a_partial_clone_that_still_checks_out(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    trace = tmp_path / "curl-trace.txt"  # what git and curl said to each other, for the message if this fails
    env = {"GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"}
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, env=env, exclude_blobs=True)
    result, log = await clone(request)
    details = f"{log.text}\n{http_git.describe()}\n{trace.read_text() if trace.exists() else '(no curl trace)'}"
    assert result.status == "success", details
    assert in_checkout(request, "config", "--get", "remote.origin.partialclonefilter") == "blob:none"
    assert (request.target / "big.bin").stat().st_size == 200_000
    # The first README's blob was never downloaded: it is not in the checked-out tree.
    missing = in_checkout(request, "rev-list", "--objects", "--all", "--missing=print")
    assert f"?{git('rev-parse', upstream.shas['first'] + ':README.md', cwd=upstream.bare)}" in missing.split()


async def test_a_partial_clone_retries_a_checkout_whose_download_is_reset(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    # The clone fetches no file contents; the checkout asks for them (big.bin among them) in a request of its own.
    big = git("rev-parse", f"{upstream.shas['third']}:big.bin", cwd=upstream.bare)
    http_git.reset_connection(f"want {big}".encode())
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, exclude_blobs=True)
    result, log = await clone(request)
    assert result.status == "success", f"{log.text}\n{http_git.describe()}"
    assert "Connection reset by peer" in log.text
    assert "git checkout failed with exit code 128 (attempt 1 of" in log.text, log.text
    assert (request.target / "big.bin").stat().st_size == 200_000
    assert http_git.count(path_contains="git-upload-pack", user=None) >= 3


# --- a checkout kept on the volume ---------------------------------------------------------------------------------


async def test_a_kept_checkout_is_cleaned_and_updated_without_a_second_clone(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path)
    first, log = await clone(request)
    assert first.status == "success", log.text
    inode = (request.target / ".git").stat().st_ino
    (request.target / "README.md").write_text("changed by a build step\n")
    (request.target / "leftover").mkdir()
    (request.target / "leftover" / "file.txt").write_text("untracked\n")
    newer = upstream.commit("Newer work", author=("Dora Dev", "dora@example.com"), files={"new.txt": "new\n"})
    upstream.push("main")

    second, log = await clone(request)
    assert second.status == "success", log.text
    assert "$ git clone" not in log.text
    assert "$ git fetch" in log.text
    assert (request.target / ".git").stat().st_ino == inode
    assert (request.target / "README.md").read_text() == "# App\n"
    assert not (request.target / "leftover").exists()
    assert (request.target / "new.txt").read_text() == "new\n"
    assert second.variables["CF_REVISION"] == newer == in_checkout(request, "rev-parse", "HEAD")
    assert second.variables["CF_COMMIT_AUTHOR"] == "Dora Dev"


async def test_ignored_files_survive_the_cleaning_of_a_kept_checkout(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    upstream.commit("Ignore node_modules", files={".gitignore": "node_modules/\n"})
    upstream.push("main")
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path)
    assert (await clone(request))[0].status == "success"
    (request.target / "node_modules").mkdir()
    (request.target / "node_modules" / "cache.js").write_text("cached\n")
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert (request.target / "node_modules" / "cache.js").read_text() == "cached\n"


async def test_a_force_pushed_branch_is_followed(tmp_path: Path, upstream: Upstream, http_git: GitHttpServer) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, revision="feature/login")
    assert (await clone(request))[0].status == "success"
    old = upstream.shas["feature"]
    rewritten = upstream.force_push_rewrite("feature/login", "Login, done differently")
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert in_checkout(request, "rev-parse", "HEAD") == rewritten
    assert in_checkout(request, "rev-parse", "feature/login") == rewritten
    assert result.variables["CF_COMMIT_MESSAGE"] == "Login, done differently"
    ancestors = in_checkout(request, "rev-list", "HEAD")
    assert old not in ancestors.split()


async def test_a_kept_shallow_checkout_stays_shallow_and_follows_new_commits(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, depth=1)
    assert (await clone(request))[0].status == "success"
    newer = upstream.commit("Another one")
    upstream.push("main")
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert result.variables["CF_REVISION"] == newer
    assert in_checkout(request, "rev-list", "--count", "HEAD") == "1"


@pytest.mark.parametrize("skip_tags", [False, True])
async def test_tags_are_fetched_on_update_unless_skipped(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer, skip_tags: bool
) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, skip_tags_on_update=skip_tags)
    assert (await clone(request))[0].status == "success"
    upstream.tag("old-tag", upstream.shas["first"])
    upstream.push("old-tag")
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert in_checkout(request, "tag", "--list", "old-tag") == ("" if skip_tags else "old-tag")


async def test_a_new_tag_is_still_found_when_tags_are_skipped_on_update(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer
) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, skip_tags_on_update=True)
    assert (await clone(request))[0].status == "success"
    upstream.tag("v2.0", upstream.shas["first"], message="Two")
    upstream.push("v2.0")
    result, log = await clone(dataclasses.replace(request, revision="v2.0"))
    assert result.status == "success", log.text
    assert result.variables["CF_REVISION"] == upstream.shas["first"]
    assert result.variables["CF_BRANCH"] == "v2.0"


@pytest.mark.parametrize("what", ["another repository", "a plain folder"])
async def test_a_folder_that_is_not_this_repository_is_replaced_by_a_fresh_clone(
    tmp_path: Path, git_root: Path, upstream: Upstream, http_git: GitHttpServer, what: str
) -> None:
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path)
    if what == "another repository":
        other = create_upstream(git_root, "other/app.git")
        other.commit("Other")
        other.push("main")
        assert (await clone(make_request(http_git.repo_url("other/app.git"), tmp_path)))[0].status == "success"
    else:
        request.target.mkdir(parents=True)
        (request.target / "junk.txt").write_text("junk\n")
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert "$ git clone" in log.text
    assert in_checkout(request, "rev-parse", "HEAD") == upstream.shas["third"]
    assert not (request.target / "junk.txt").exists()
    assert in_checkout(request, "config", "--get", "remote.origin.url") == http_git.repo_url("acme/app.git")


# --- other transports ----------------------------------------------------------------------------------------------


async def test_a_clone_from_git_daemon(tmp_path: Path, upstream: Upstream, daemon_url: str) -> None:
    request = make_request(f"{daemon_url}/acme/app.git", tmp_path, revision="feature/login", depth=1)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert result.variables["CF_REVISION"] == upstream.shas["feature"]
    assert result.variables["CF_COMMIT_AUTHOR"] == "Carol Coder"
    assert result.variables["CF_REPO_OWNER"] == "acme"
    assert "CF_COMMIT_URL" not in result.variables  # no web address is known for git://


async def test_a_clone_from_a_file_url(tmp_path: Path, upstream: Upstream) -> None:
    request = make_request(f"file://{upstream.bare}", tmp_path)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert result.variables["CF_REPO_NAME"] == "app"
    assert result.variables["CF_REVISION"] == upstream.shas["third"]


async def test_use_proxy_sends_the_clone_through_the_proxy(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer, proxy: Tinyproxy
) -> None:
    url = http_git.repo_url("acme/app.git")
    env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url}
    request = make_request(url, tmp_path, use_proxy=True, env=env)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert f"GET {url}/info/refs?service=git-upload-pack HTTP/1.1" in proxy.requests()
    assert any(line.startswith(f"POST {url}/git-upload-pack") for line in proxy.requests())


async def test_without_use_proxy_the_proxy_variables_are_ignored(
    tmp_path: Path, upstream: Upstream, http_git: GitHttpServer, proxy: Tinyproxy
) -> None:
    env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "ALL_PROXY": proxy.url, "all_proxy": proxy.url}
    request = make_request(http_git.repo_url("acme/app.git"), tmp_path, use_proxy=False, env=env)
    result, log = await clone(request)
    assert result.status == "success", log.text
    assert proxy.requests() == []
    assert http_git.count(path_contains="/acme/app.git/") > 0


# --- failures, retries, cancel -------------------------------------------------------------------------------------


async def test_a_server_that_is_down_at_first_is_retried(tmp_path: Path, git_root: Path, upstream: Upstream) -> None:
    port = free_port()
    server = GitHttpServer(git_root, port=port)
    log = Log()
    started: list[bool] = []

    async def output(chunk: bytes) -> None:
        await log(chunk)
        if b"retrying" in chunk and not started:
            started.append(True)
            server.start()

    url = f"http://127.0.0.1:{port}/acme/app.git"
    try:
        result = await git_clone(make_request(url, tmp_path, retries=3, retry_delay=0.2), output)
    finally:
        server.stop()
    assert result.status == "success", log.text
    assert "[outpost] git clone failed with exit code 128 (attempt 1 of 4); retrying in 0.2s" in log.text
    assert result.variables["CF_REVISION"] == upstream.shas["third"]


async def test_retries_end_and_the_clone_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/acme/app.git"
    result, log = await clone(make_request(url, tmp_path, retries=2, retry_delay=0.05))
    assert result.status == "failure"
    assert result.exit_code == 128
    assert log.text.count("retrying in 0.05s") == 2
    assert result.message.startswith("git clone failed with exit code 128: fatal: unable to access")
    assert not (tmp_path / "volume" / "app").exists()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections (the kernel does) and never answers: a clone hangs until cancelled."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


async def test_cancel_ends_git_and_reports_terminated(tmp_path: Path) -> None:
    async with silent_server() as port:
        url = f"http://127.0.0.1:{port}/acme/hanging.git"
        request = make_request(url, tmp_path)
        cancel = asyncio.Event()
        running = asyncio.create_task(clone(request, cancel))
        deadline = time.monotonic() + 10
        while not processes_mentioning(url) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert processes_mentioning(url), "git never started"
        await asyncio.sleep(0.2)
        cancel.set()
        started = time.monotonic()
        result, _ = await asyncio.wait_for(running, 10)
    assert time.monotonic() - started < 5
    assert result.status == "terminated"
    assert result.exit_code is None
    assert processes_mentioning(url) == []


async def test_cancelling_the_task_ends_git_too(tmp_path: Path) -> None:
    async with silent_server() as port:
        url = f"http://127.0.0.1:{port}/acme/abandoned.git"
        running = asyncio.create_task(clone(make_request(url, tmp_path)))
        deadline = time.monotonic() + 10
        while not processes_mentioning(url) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
    assert processes_mentioning(url) == []


async def test_cancel_during_the_wait_between_retries(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/acme/app.git"
    cancel = asyncio.Event()
    log = Log()

    async def output(chunk: bytes) -> None:
        await log(chunk)
        if b"retrying" in chunk:
            cancel.set()

    started = time.monotonic()
    result = await git_clone(make_request(url, tmp_path, retry_delay=30.0), output, cancel=cancel)
    assert result.status == "terminated"
    assert time.monotonic() - started < 10


# --- URLs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "owner", "name", "clean"),
    [
        ("https://github.com/acme/app.git", "acme", "app", "https://github.com/acme/app.git"),
        ("https://github.com/acme/app", "acme", "app", "https://github.com/acme/app"),
        ("https://gitlab.example.com/group/sub/app.git", "group/sub", "app", None),
        (
            "https://u:p%40ss@git.example.com:8443/acme/app.git/",
            "acme",
            "app",
            "https://git.example.com:8443/acme/app.git/",
        ),
        ("git@github.com:acme/app.git", "acme", "app", None),
        ("ssh://git@git.example.com:2222/acme/app.git", "acme", "app", None),
        ("git://127.0.0.1:9418/acme/app.git", "acme", "app", None),
        ("file:///srv/git/acme/app.git", "srv/git/acme", "app", None),
    ],
)
def test_repository_urls_give_owner_name_and_a_plain_url(url: str, owner: str, name: str, clean: str | None) -> None:
    repo = parse_repo_url(url)
    assert (repo.owner, repo.name) == (owner, name)
    assert repo.url == (clean or url)
    assert repo_dir_name(url) == name


def test_credentials_are_split_from_an_http_url() -> None:
    repo = parse_repo_url("https://x-token:p%40ss@github.com/acme/app.git")
    assert (repo.username, repo.password, repo.url) == ("x-token", "p@ss", "https://github.com/acme/app.git")
    token_only = parse_repo_url("https://ghp_abcdef@github.com/acme/app.git")
    assert (token_only.username, token_only.password) == ("ghp_abcdef", None)


@pytest.mark.parametrize("url", ["acme/app", "ftp://host/acme/app.git", "https://host/"])
def test_what_is_not_a_clone_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_repo_url(url)


async def test_a_bad_url_gives_a_failure_not_an_exception(tmp_path: Path) -> None:
    request = CloneRequest(repo="acme/app", target=tmp_path / "app")
    result, _ = await clone(request)
    assert result.status == "failure"
    assert "owner/name must be resolved" in result.message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/app.git", "https://github.com/acme/app/commit/abc"),
        ("https://gitlab.example.com/group/sub/app.git", "https://gitlab.example.com/group/sub/app/commit/abc"),
        ("git@github.com:acme/app.git", "https://github.com/acme/app/commit/abc"),
        ("git@bitbucket.org:acme/app.git", "https://bitbucket.org/acme/app/commits/abc"),
        ("git@git.internal:acme/app.git", None),
        ("git://host/acme/app.git", None),
    ],
)
def test_the_commit_url_points_at_the_web_page_of_the_commit(url: str, expected: str | None) -> None:
    assert commit_url(parse_repo_url(url), "abc") == expected


def test_the_escaped_message_is_the_inside_of_a_json_string() -> None:
    assert escape_message('say "hi"\n\tback\\slash é') == 'say \\"hi\\"\\n\\tback\\\\slash é'


async def test_standard_upstream_is_what_the_tests_expect(git_root: Path) -> None:
    up = standard_upstream(git_root, "check/app.git")
    assert git("rev-parse", "main", cwd=up.bare) == up.shas["third"]
    assert git("cat-file", "-t", "v1.0", cwd=up.bare) == "tag"
    assert git("cat-file", "-t", "v0.1", cwd=up.bare) == "commit"
