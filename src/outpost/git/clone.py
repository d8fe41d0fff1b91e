"""Cloning: check a repository out (or refresh the checkout a cached volume kept) at a revision, and give the
CF_* variables of the commit that was checked out. The engine's git-clone step runs it (`engine/clonestep.py`).

Credentials reach git as `credentials` says, and are masked in everything git prints.

Variables from the URL path: CF_REPO_NAME is its last component without `.git`, CF_REPO_OWNER everything before
it (`group/sub` for a GitLab subgroup; the directories for a file:// URL). CF_COMMIT_URL is `<web url>/commit/<sha>`
for http(s) URLs, and for ssh URLs of github.com, gitlab.com and bitbucket.org (`/commits/` there); otherwise it is
left out. CF_COMMIT_MESSAGE_ESCAPED is the message as the inside of a JSON string (`"` → `\\"`, newline → `\\n`...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from outpost.git.credentials import environment, mask, secret_forms
from outpost.git.process import AUTH_FAILED, NOT_THERE, end, last_line
from outpost.git.urls import RepoUrl, commit_url, parse_repo_url
from outpost.masking import Masker
from outpost.pipelines.variables import revision_variables

Output = Callable[[bytes], Awaitable[None]]
CloneStatus = Literal["success", "failure", "terminated"]

TAIL = 16_384  # bytes of a command's output kept to explain its failure
_SHA_LIKE = re.compile(r"[0-9a-f]{7,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")


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
    secrets = secret_forms(username, password)
    with tempfile.TemporaryDirectory(prefix="outpost-git-") as private:  # mode 0700
        env = environment(request.env, Path(private), username, password, use_proxy=request.use_proxy)
        git = _Git(request, repo, env, output, Masker(secrets), cancel or asyncio.Event())
        try:
            return await _clone(git, request, repo)
        except _Terminated:
            return CloneResult("terminated", "the clone was cancelled")
        except _Failed as exc:
            message = mask(exc.message, secrets)
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
        **revision_variables(branch, sha),
        "CF_COMMIT_AUTHOR": author,
        "CF_COMMIT_MESSAGE": message,
        "CF_COMMIT_MESSAGE_ESCAPED": escape_message(message),
    }
    if url := commit_url(repo, sha):
        variables["CF_COMMIT_URL"] = url
    return variables


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
            if AUTH_FAILED.search(text):
                raise _Failed(f"authentication failed for {self.repo.url}: check the credentials", code)
            if NOT_THERE.search(text):
                raise _NotThere(_explain(args[0], code, tail), code)
            if code != 128 or attempt == attempts:
                raise _Failed(_explain(args[0], code, tail), code)
            delay = self.request.retry_delay
            await self.say(f"git {args[0]} failed with exit code 128 (attempt {attempt} of {attempts}); "
                           f"retrying in {delay:g}s")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.cancel.wait()
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
            await end(process)
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
    last = last_line(tail)
    return f"git {command} failed with exit code {code}" + (f": {last}" if last else "")
