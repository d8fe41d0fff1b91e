"""The git-clone step, runner side: clone a repository (or refresh the checkout a cached volume kept) at a
revision, and give the CF_* variables of the commit that was checked out.

Credentials reach git only through a GIT_ASKPASS script that reads them from git's environment: never argv
(readable by anyone in /proc), never `.git/config`, never the log (masked there as well).

Variables from the URL path: CF_REPO_NAME is its last component without `.git`, CF_REPO_OWNER everything before
it (`group/sub` for a GitLab subgroup; the directories for a file:// URL). CF_COMMIT_URL is `<web url>/commit/<sha>`
for http(s) URLs, and for ssh URLs of github.com, gitlab.com and bitbucket.org (`/commits/` there); otherwise it is
left out. CF_COMMIT_MESSAGE_ESCAPED is the message as the inside of a JSON string (`"` → `\\"`, newline → `\\n`...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from outpost.masking import Masker
from outpost.pipelines.variables import normalize_branch_tag

Output = Callable[[bytes], Awaitable[None]]
CloneStatus = Literal["success", "failure", "terminated"]

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when a clone is cancelled
TAIL = 16_384  # bytes of a command's output kept to explain its failure
_SCHEMES = ("https", "http", "ssh", "git", "file")
_SHA_LIKE = re.compile(r"[0-9a-f]{7,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_SCP_LIKE = re.compile(r"(?:[^@/:]+@)?(?P<host>[^@/:]+):(?P<path>.+)")
_AUTH_FAILED = re.compile(
    r"authentication failed|could not read (username|password)|returned error: 40[13]|permission denied \(publickey",
    re.IGNORECASE,
)
_NOT_THERE = re.compile(
    r"couldn't find remote ref|not our ref|unadvertised object|repository '.*' not found|repository not found",
    re.IGNORECASE,
)
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$OUTPOST_GIT_USERNAME" ;;
  *) printf '%s\\n' "$OUTPOST_GIT_PASSWORD" ;;
esac
"""


@dataclass(frozen=True, kw_only=True)
class CloneRequest:
    repo: str  # full URL; `owner/name` is resolved through an integration by the caller
    target: Path  # the checkout folder: <working_directory>/<repo_dir_name(repo)>
    revision: str | None = None  # branch, tag or SHA; None = the default branch
    username: str | None = None
    password: str | None = None
    depth: int | None = None
    exclude_blobs: bool = False
    use_proxy: bool = False  # honour HTTP(S)_PROXY / ALL_PROXY from env
    env: Mapping[str, str] = field(default_factory=dict)  # git's base environment (PATH, HOME, proxies...)
    skip_tags_on_update: bool = False
    retries: int = 3  # extra attempts after a network command exited with 128
    retry_delay: float = 5.0


@dataclass
class CloneResult:
    status: CloneStatus
    message: str = ""
    exit_code: int | None = None
    variables: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None


@dataclass(frozen=True)
class RepoUrl:
    url: str  # as git gets it: credentials removed from http(s) URLs
    scheme: str  # https, http, ssh, git, file, or scp for `user@host:path`
    host: str  # with the port, if any
    path: str  # without the leading slash: `acme/app.git`
    username: str | None = None
    password: str | None = None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")

    @property
    def owner(self) -> str:
        return self.path.rstrip("/").rpartition("/")[0]

    def same_repo(self, other: RepoUrl) -> bool:
        def key(u: RepoUrl) -> tuple[str, str, str]:
            scheme = "ssh" if u.scheme == "scp" else u.scheme
            return scheme, u.host.lower(), u.path.rstrip("/").removesuffix(".git")

        return key(self) == key(other)


def parse_repo_url(url: str) -> RepoUrl:
    """Splits a clone URL; raises ValueError for something git could not clone from."""
    text = url.strip()
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"unsupported repository URL scheme {scheme!r}: use one of {', '.join(_SCHEMES)}")
        userinfo, _, host = parts.netloc.rpartition("@")
        if scheme not in ("http", "https"):  # an ssh user name is part of the address, not a secret
            host = parts.netloc
        clean = urllib.parse.urlunsplit((scheme, host, parts.path, parts.query, ""))
        username = password = None
        if scheme in ("http", "https") and userinfo:
            raw_user, has_password, raw_password = userinfo.partition(":")
            username = urllib.parse.unquote(raw_user) or None
            password = urllib.parse.unquote(raw_password) if has_password else None
        path = parts.path.lstrip("/")
    elif match := _SCP_LIKE.fullmatch(text):
        scheme, host, path, clean, username, password = "scp", match["host"], match["path"], text, None, None
    elif text.startswith("/"):
        scheme, host, path, clean, username, password = "file", "", text.lstrip("/"), text, None, None
    else:
        raise ValueError(f"not a repository URL: {url!r} (owner/name must be resolved to a URL first)")
    result = RepoUrl(clean, scheme, host, path, username, password)
    if not result.name:
        raise ValueError(f"no repository name in {clean!r}")
    return result


def repo_dir_name(url: str) -> str:
    """The folder a repository is checked out into: `https://host/acme/app.git` gives `app` (ValueError if none)."""
    return parse_repo_url(url).name


def commit_url(repo: RepoUrl, sha: str) -> str | None:
    web_path = repo.path.rstrip("/").removesuffix(".git")
    if repo.scheme in ("http", "https"):
        return f"{repo.scheme}://{repo.host}/{web_path}/commit/{sha}"
    host = repo.host.rpartition("@")[2].split(":")[0].lower()
    if repo.scheme in ("ssh", "scp") and host in ("github.com", "gitlab.com", "bitbucket.org"):
        return f"https://{host}/{web_path}/{'commits' if host == 'bitbucket.org' else 'commit'}/{sha}"
    return None


def escape_message(message: str) -> str:
    """CF_COMMIT_MESSAGE_ESCAPED: the message as it would sit between the quotes of a JSON string."""
    return json.dumps(message, ensure_ascii=False)[1:-1]


async def clone(request: CloneRequest, output: Output, *, cancel: asyncio.Event | None = None) -> CloneResult:
    """Clones `request.repo` into `request.target` (or refreshes the checkout there) and checks out the revision."""
    try:
        repo = parse_repo_url(request.repo)
    except ValueError as exc:
        return CloneResult("failure", str(exc))
    username = request.username or repo.username
    password = request.password or repo.password
    secrets = [s for s in (username, password) if s]
    secrets += [urllib.parse.quote(s, safe="") for s in secrets]
    with tempfile.TemporaryDirectory(prefix="outpost-git-") as private:  # mode 0700
        env = _environment(request, Path(private), username, password)
        git = _Git(request, repo, env, output, Masker(secrets), cancel or asyncio.Event())
        try:
            return await _clone(git, request, repo)
        except _Terminated:
            return CloneResult("terminated", "the clone was cancelled")
        except _Failed as exc:
            message = _mask(exc.message, secrets)
            await git.say(message)
            return CloneResult("failure", message, exc.exit_code)
        except OSError as exc:  # the volume: a folder that cannot be removed or created
            message = f"cannot prepare {request.target}: {exc}"
            await git.say(message)
            return CloneResult("failure", message)


async def _clone(git: _Git, request: CloneRequest, repo: RepoUrl) -> CloneResult:
    target = request.target
    if await _reusable(git, target, repo):
        await _refresh(git, request)
    else:
        await _fresh_clone(git, request, repo)
    branch = await _checkout(git, request)
    variables = await _variables(git, target, repo, branch)
    where = f"{branch} " if branch else ""
    return CloneResult(
        "success",
        f"checked out {where}{variables['CF_SHORT_REVISION']} of {repo.url}",
        0,
        variables,
        workdir=target,
    )


def _environment(request: CloneRequest, private: Path, username: str | None, password: str | None) -> dict[str, str]:
    env = {k: v for k, v in request.env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    if not request.use_proxy:
        for name in PROXY_VARIABLES:
            env.pop(name, None)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a wrong password fails at once instead of waiting for a terminal
    env["LC_ALL"] = "C"  # git's messages in English: failures are recognised by their text
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env["GIT_ASKPASS"] = ""  # empty: no helper asked, no prompt
    if username or password:
        askpass = private / "askpass.sh"
        askpass.write_text(_ASKPASS)
        askpass.chmod(0o700)
        env.update(GIT_ASKPASS=str(askpass), OUTPOST_GIT_USERNAME=username or "", OUTPOST_GIT_PASSWORD=password or "")
    return env


async def _reusable(git: _Git, target: Path, repo: RepoUrl) -> bool:
    """True if target holds a usable checkout of this repository; otherwise target is removed."""
    if (target / ".git").is_dir():
        code, origin = await git.quiet("config", "--get", "remote.origin.url", cwd=target)
        try:
            same = code == 0 and parse_repo_url(origin).same_repo(repo)
        except ValueError:
            same = False
        if same and (await git.quiet("rev-parse", "--verify", "--quiet", "HEAD", cwd=target))[0] == 0:
            if origin != repo.url:  # e.g. credentials written into the URL by some other tool
                await git.quiet("remote", "set-url", "origin", repo.url, cwd=target)
            return True
        await git.say(f"{target} does not hold a checkout of {repo.url}: removing it")
    _remove(target)
    return False


async def _fresh_clone(git: _Git, request: CloneRequest, repo: RepoUrl) -> None:
    target = request.target
    target.parent.mkdir(parents=True, exist_ok=True)
    args = ["clone", "--progress", "--no-checkout"]
    if request.depth:
        args += [f"--depth={request.depth}", "--no-single-branch"]
    if request.exclude_blobs:
        args.append("--filter=blob:none")
    await git.network(*args, "--", repo.url, str(target), cwd=target.parent, before_retry=lambda: _remove(target))


async def _refresh(git: _Git, request: CloneRequest) -> None:
    """Brings a kept checkout back to a clean state and fetches what changed upstream; no second full clone."""
    target = request.target
    (target / ".git" / "index.lock").unlink(missing_ok=True)  # left by a git that was killed
    await git.stream_checked("reset", "--hard", "--quiet", cwd=target)
    # -df and not -dfx: ignored files (dependency caches) are what a cached volume is for.
    await git.stream_checked("clean", "-df", cwd=target)
    args = ["fetch", "--progress", "--prune", "--force", "--no-tags" if request.skip_tags_on_update else "--tags"]
    shallow = (await git.quiet("rev-parse", "--is-shallow-repository", cwd=target))[1] == "true"
    if shallow:
        args.append(f"--depth={request.depth}" if request.depth else "--unshallow")
    await git.network(*args, "origin", cwd=target)


async def _checkout(git: _Git, request: CloneRequest) -> str | None:
    """Checks out the revision; returns the branch or tag name (None for a commit given by SHA)."""
    target = request.target
    revision = request.revision or await _default_branch(git, target)
    kind, ref = await _locate(git, request, revision)
    if kind == "branch":
        # -B moves the local branch to the fetched head: a force-push upstream is followed.
        args: tuple[str, ...] = ("checkout", "--force", "-B", revision, "--track", f"origin/{revision}")
    else:
        args = ("checkout", "--force", "--detach", ref)
    # In a partial clone (exclude_blobs) the checkout downloads the files' contents: it talks to the server and
    # its transient failures are retried like the clone's.
    if (await git.quiet("config", "--get", "remote.origin.promisor", cwd=target))[1] == "true":
        await git.network(*args, cwd=target)
    else:
        await git.stream_checked(*args, cwd=target)
    return None if kind == "commit" else revision


async def _default_branch(git: _Git, target: Path) -> str:
    code, head = await git.quiet("symbolic-ref", "--short", "refs/remotes/origin/HEAD", cwd=target)
    if code != 0:
        await git.network("remote", "set-head", "origin", "--auto", cwd=target)
        code, head = await git.quiet("symbolic-ref", "--short", "refs/remotes/origin/HEAD", cwd=target)
    if code != 0:
        raise _Failed("cannot tell the repository's default branch: give a revision")
    return head.removeprefix("origin/")


async def _locate(git: _Git, request: CloneRequest, revision: str) -> tuple[str, str]:
    """What the revision is ("branch", "tag" or "commit") and the ref to check out, fetching it if needed."""
    target = request.target

    async def commit_of(ref: str) -> str | None:
        code, sha = await git.quiet("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=target)
        return sha if code == 0 else None

    if await commit_of(f"refs/remotes/origin/{revision}"):
        return "branch", revision
    if await commit_of(f"refs/tags/{revision}"):
        return "tag", f"refs/tags/{revision}"
    if _SHA_LIKE.fullmatch(revision) and (sha := await commit_of(revision)):
        return "commit", sha
    # Not here yet: a tag beyond a shallow history, tags not fetched on update, a SHA off the fetched tips.
    depth = [f"--depth={request.depth}"] if request.depth else []
    if _FULL_SHA.fullmatch(revision):
        with contextlib.suppress(_NotThere):
            await git.network("fetch", "--progress", *depth, "origin", revision, cwd=target)
            return "commit", revision
    else:
        with contextlib.suppress(_NotThere):
            spec = f"+refs/tags/{revision}:refs/tags/{revision}"
            await git.network("fetch", "--progress", "--no-tags", *depth, "origin", spec, cwd=target)
            return "tag", f"refs/tags/{revision}"
        with contextlib.suppress(_NotThere):
            spec = f"+refs/heads/{revision}:refs/remotes/origin/{revision}"
            await git.network("fetch", "--progress", "--no-tags", *depth, "origin", spec, cwd=target)
            return "branch", revision
    raise _Failed(f"revision {revision!r} is not a branch, tag or commit of {git.repo.url}")


async def _variables(git: _Git, target: Path, repo: RepoUrl, branch: str | None) -> dict[str, str]:
    _, sha = await git.quiet("rev-parse", "HEAD", cwd=target)
    code, details = await git.quiet("log", "-1", "--no-show-signature", "--format=%an%x00%B", "HEAD", cwd=target)
    if code != 0 or not _FULL_SHA.fullmatch(sha):
        raise _Failed("cannot read the checked-out commit")
    author, _, message = details.partition("\0")
    message = message.rstrip("\n")
    variables = {
        "CF_REPO_OWNER": repo.owner,
        "CF_REPO_NAME": repo.name,
        "CF_REVISION": sha,
        "CF_SHORT_REVISION": sha[:7],
        "CF_COMMIT_AUTHOR": author,
        "CF_COMMIT_MESSAGE": message,
        "CF_COMMIT_MESSAGE_ESCAPED": escape_message(message),
    }
    if branch is not None:
        normalized = normalize_branch_tag(branch)
        variables.update(
            CF_BRANCH=branch,
            CF_BRANCH_TAG_NORMALIZED=normalized,
            CF_BRANCH_TAG_NORMALIZED_LOWER_CASE=normalized.lower(),
        )
    if url := commit_url(repo, sha):
        variables["CF_COMMIT_URL"] = url
    return variables


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _mask(text: str, secrets: list[str]) -> str:
    masker = Masker(secrets)
    return (masker.feed(text.encode()) + masker.flush()).decode(errors="replace")


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in re.split(r"[\r\n]+", output.decode(errors="replace")) if line.strip()]
    return lines[-1] if lines else ""


class _Failed(Exception):
    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class _NotThere(_Failed):
    """The server does not have the ref or object asked for (or the repository): not worth a retry."""


class _Terminated(Exception):
    pass


class _Git:
    """Runs git for one clone: one environment and set of options, output masked and forwarded, cancel honoured."""

    def __init__(
        self,
        request: CloneRequest,
        repo: RepoUrl,
        env: dict[str, str],
        output: Output,
        masker: Masker,
        cancel: asyncio.Event,
    ) -> None:
        self.request = request
        self.repo = repo
        self.env = env
        self.output = output
        self.masker = masker
        self.cancel = cancel
        self.options = [
            "-c", "credential.helper=",  # no helper from the host's config may store or offer credentials
            "-c", "core.hooksPath=/dev/null",  # a kept checkout's hooks must not see the credentials
            "-c", "advice.detachedHead=false",
        ]  # fmt: skip
        if not request.use_proxy:
            self.options += ["-c", "http.proxy="]  # empty: no proxy, even one set in the host's git config

    async def say(self, line: str) -> None:
        await self.output(self.masker.feed(f"[outpost] {line}\n".encode()) + self.masker.flush())

    async def quiet(self, *args: str, cwd: Path) -> tuple[int, str]:
        """Runs git without showing its output; returns the exit code and stdout without the final newline."""
        code, out = await self._run(args, cwd=cwd, stream=False)
        return code, out.decode(errors="replace").rstrip("\n")

    async def stream_checked(self, *args: str, cwd: Path) -> None:
        code, tail = await self._run(args, cwd=cwd, stream=True)
        if code != 0:
            raise _Failed(_explain(args[0], code, tail), code)

    async def network(self, *args: str, cwd: Path, before_retry: Callable[[], None] | None = None) -> None:
        """A command that talks to the server: exit 128 is retried, except for bad credentials or missing refs."""
        attempts = max(self.request.retries, 0) + 1
        for attempt in range(1, attempts + 1):
            code, tail = await self._run(args, cwd=cwd, stream=True)
            if code == 0:
                return
            text = tail.decode(errors="replace")
            if _AUTH_FAILED.search(text):
                raise _Failed(f"authentication failed for {self.repo.url}: check the credentials", code)
            if _NOT_THERE.search(text):
                raise _NotThere(_explain(args[0], code, tail), code)
            if code != 128 or attempt == attempts:
                raise _Failed(_explain(args[0], code, tail), code)
            delay = self.request.retry_delay
            await self.say(f"git {args[0]} failed with exit code 128 (attempt {attempt} of {attempts}); "
                           f"retrying in {delay:g}s")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cancel.wait(), delay)
                raise _Terminated
            if before_retry is not None:
                before_retry()

    async def _run(self, args: tuple[str, ...], *, cwd: Path, stream: bool) -> tuple[int, bytes]:
        if self.cancel.is_set():
            raise _Terminated
        if stream:
            await self.output(self.masker.feed(f"$ git {' '.join(args)}\n".encode()))
        try:
            process = await asyncio.create_subprocess_exec(
                "git", *self.options, *args,
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if stream else subprocess.DEVNULL,
                start_new_session=True,  # one process group: cancel ends git and its helpers together
            )  # fmt: skip
        except OSError as exc:
            raise _Failed(f"cannot run git on this runner: {exc}") from exc
        work = asyncio.ensure_future(self._collect(process, stream))
        stop = asyncio.ensure_future(self.cancel.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                raise _Terminated
            return work.result()
        except BaseException:  # cancelled, terminated, or the output callback failed: git must not outlive us
            await _end(process)
            raise
        finally:
            stop.cancel()
            work.cancel()

    async def _collect(self, process: asyncio.subprocess.Process, stream: bool) -> tuple[int, bytes]:
        assert process.stdout is not None
        if not stream:
            out, _ = await process.communicate()
            return await process.wait(), out
        tail = bytearray()
        while chunk := await process.stdout.read(65_536):
            tail += chunk
            del tail[:-TAIL]
            if shown := self.masker.feed(chunk):
                await self.output(shown)
        if held := self.masker.flush():
            await self.output(held)
        return await process.wait(), bytes(tail)


def _explain(command: str, code: int, tail: bytes) -> str:
    last = _last_line(tail)
    return f"git {command} failed with exit code {code}" + (f": {last}" if last else "")


async def _end(process: asyncio.subprocess.Process) -> None:
    """Ends git and every helper it started (git-remote-http, index-pack, ssh)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), TERM_GRACE)
            return
