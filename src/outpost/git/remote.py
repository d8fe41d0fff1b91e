"""Reading a repository without a checkout: its branches (`git ls-remote`), one file at a revision, and the
files changed between two revisions. Each runs against a throw-away bare repository with a shallow,
blob-filtered fetch, so only the commits, trees and the one blob asked for travel.

The runner uses these for YAML from the repository and for git queries; the control plane only for "test
connection" of an integration that is not behind the firewall. Credentials travel as `credentials` says:
through GIT_ASKPASS and the environment, never argv, `.git/config` or a message (masked there).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from outpost.git.credentials import environment, mask, secret_forms
from outpost.git.process import AUTH_FAILED, NOT_THERE, end, last_line
from outpost.git.urls import url_user, without_credentials

DEFAULT_TIMEOUT = 60.0
MAX_FILE = 1024 * 1024  # bytes of a file read from a repository
MAX_CHANGED = 10_000  # paths in a changed-files answer
_FULL_SHA = re.compile(r"[0-9a-f]{40}")


class GitRemoteError(Exception):
    """A git operation against a remote failed; the message is safe to show (credentials masked)."""


class NotFoundInRepo(GitRemoteError):
    """The revision or the path does not exist in the repository."""


class FileTooLarge(GitRemoteError):
    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True, kw_only=True)
class Remote:
    url: str
    username: str | None = None
    password: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # git's base environment (PATH, HOME...)
    use_proxy: bool = False

    @property
    def secrets(self) -> list[str]:
        return secret_forms(self.username, self.password)


@dataclass(frozen=True)
class FileAtRevision:
    revision: str  # the commit SHA the file was read at
    content: bytes
    default_branch: str | None = None  # the branch it was read from, when no revision was asked for


async def ls_remote(
    remote: Remote, *patterns: str, heads: bool = False, seconds: float = DEFAULT_TIMEOUT
) -> dict[str, str]:
    """Refs of the remote (`refs/heads/main` → SHA), optionally only branches or those matching patterns."""
    args = ["ls-remote", *(["--heads"] if heads else []), "--", remote.url, *patterns]
    async with _Session(remote, seconds) as git:
        out = await git.run(*args)
    refs: dict[str, str] = {}
    for line in out.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        if _FULL_SHA.fullmatch(sha) and ref:
            refs[ref] = sha
    return refs


async def branches(remote: Remote, *, seconds: float = DEFAULT_TIMEOUT) -> dict[str, str]:
    """Branch name → head commit SHA."""
    refs = await ls_remote(remote, heads=True, seconds=seconds)
    return {ref.removeprefix("refs/heads/"): sha for ref, sha in sorted(refs.items())}


async def read_file(
    remote: Remote, revision: str | None, path: str, *, max_bytes: int = MAX_FILE, seconds: float = DEFAULT_TIMEOUT
) -> FileAtRevision:
    """The file at `path` in the revision (branch, tag or SHA; None = the default branch)."""
    clean = _clean_path(path)
    async with _Session(remote, seconds) as git:
        default_branch = None if revision else await git.default_branch()
        sha = await git.fetch(revision or default_branch, depth=1)
        code, size_text, _ = await git.try_run("cat-file", "-s", f"{sha}:{clean}")
        if code != 0:
            raise NotFoundInRepo(f"there is no file {clean} at {_label(revision, sha)} of {git.url}")
        size = int(size_text.decode().strip() or "0")
        if size > max_bytes:
            raise FileTooLarge(
                f"{clean} at {_label(revision, sha)} is {size} bytes; at most {max_bytes} bytes can be read", size
            )
        _, kind, _ = await git.try_run("cat-file", "-t", f"{sha}:{clean}")
        if kind.decode().strip() != "blob":
            raise NotFoundInRepo(f"{clean} at {_label(revision, sha)} of {git.url} is not a file")
        content = await git.run("cat-file", "blob", f"{sha}:{clean}")  # fetches this one blob
    return FileAtRevision(sha, content, default_branch)


async def changed_files(
    remote: Remote, base: str, head: str, *, limit: int = MAX_CHANGED, seconds: float = DEFAULT_TIMEOUT
) -> tuple[str, str, list[str], bool]:
    """The paths that differ between two revisions (their trees; no history is needed): (base SHA, head SHA,
    paths sorted, whether the list was cut at `limit`)."""
    async with _Session(remote, seconds) as git:
        base_sha = await git.fetch(base, depth=1)
        head_sha = await git.fetch(head, depth=1)
        out = await git.run("diff", "--name-only", "--no-renames", "-z", base_sha, head_sha)
    paths = sorted(p for p in out.decode(errors="replace").split("\0") if p)
    return base_sha, head_sha, paths[:limit], len(paths) > limit


def _clean_path(path: str) -> str:
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in path:
        raise GitRemoteError(f"{path!r} is not a path inside the repository")
    return "/".join(parts)


def _label(revision: str | None, sha: str) -> str:
    return f"{revision} ({sha[:7]})" if revision and revision != sha else sha[:7]


class _Session:
    """A throw-away bare repository and environment for one operation, bounded in time as a whole."""

    def __init__(self, remote: Remote, timeout: float) -> None:
        self.remote = remote
        self.url = without_credentials(remote.url)
        self.timeout = timeout
        self._dir = tempfile.TemporaryDirectory(prefix="outpost-git-")  # mode 0700
        self._deadline = 0.0

    async def __aenter__(self) -> _Session:
        private = Path(self._dir.name)
        self.repo = private / "repo.git"
        self.env = _environment(self.remote, private)
        self._deadline = asyncio.get_running_loop().time() + self.timeout
        await self.run("init", "--bare", "--quiet", str(self.repo), cwd=private)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._dir.cleanup()

    async def default_branch(self) -> str | None:
        """The branch the remote's HEAD points at (None if it does not say)."""
        out = await self.run("ls-remote", "--symref", "--", self.url, "HEAD")
        for line in out.decode(errors="replace").splitlines():
            target, _, name = line.partition("\t")
            if target.startswith("ref: refs/heads/") and name == "HEAD":
                return target.removeprefix("ref: refs/heads/")
        return None

    async def fetch(self, revision: str | None, *, depth: int) -> str:
        """Fetches one revision (shallow, no blobs) and returns its commit SHA."""
        want = revision or "HEAD"
        args = ["fetch", "--quiet", "--no-tags", f"--depth={depth}", "--filter=blob:none", self.url]
        code, _, err = await self.try_run(*args, want)
        if code != 0 and revision and not _FULL_SHA.fullmatch(revision) and not NOT_THERE.search(err.decode()):
            # an old server or an ambiguous name: try the fully qualified names
            for ref in (f"refs/tags/{revision}", f"refs/heads/{revision}"):
                code, _, err = await self.try_run(*args, ref)
                if code == 0:
                    break
        if code != 0:
            raise self._failure("fetch", code, err, revision)
        _, sha, _ = await self.try_run("rev-parse", "--verify", "FETCH_HEAD^{commit}")
        text = sha.decode().strip()
        if not _FULL_SHA.fullmatch(text):
            raise NotFoundInRepo(f"{want} of {self.url} is not a commit")
        return text

    async def run(self, *args: str, cwd: Path | None = None) -> bytes:
        code, out, err = await self.try_run(*args, cwd=cwd)
        if code != 0:
            raise self._failure(args[0], code, err, None)
        return out

    async def try_run(self, *args: str, cwd: Path | None = None) -> tuple[int, bytes, bytes]:
        """Runs git in the bare repository; returns the exit code, stdout and stderr."""
        options = ["-c", "credential.helper=", "-c", "core.hooksPath=/dev/null", "-c", "protocol.version=2"]
        if not self.remote.use_proxy:
            options += ["-c", "http.proxy="]
        git_dir = [] if args[0] in ("init", "ls-remote") else ["--git-dir", str(self.repo)]
        remaining = self._deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise GitRemoteError(f"git did not answer within {self.timeout:g} s for {self.url}")
        try:
            process = await asyncio.create_subprocess_exec(
                "git", *options, *git_dir, *args,
                cwd=cwd or self.repo.parent,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # one process group: a timeout ends git and its helpers together
            )  # fmt: skip
        except OSError as exc:
            raise GitRemoteError(f"cannot run git: {exc}") from exc
        try:
            async with asyncio.timeout(remaining):
                out, err = await process.communicate()
        except TimeoutError:
            await end(process)
            raise GitRemoteError(f"git {args[0]} did not finish within {self.timeout:g} s for {self.url}") from None
        except BaseException:
            await end(process)
            raise
        return await process.wait(), out, err

    def _failure(self, command: str, code: int, out: bytes, revision: str | None) -> GitRemoteError:
        text = mask(out.decode(errors="replace"), self.remote.secrets)
        if AUTH_FAILED.search(text):
            return GitRemoteError(f"authentication failed for {self.url}: check the credentials")
        if revision is not None and NOT_THERE.search(text):
            return NotFoundInRepo(f"revision {revision!r} is not a branch, tag or commit of {self.url}")
        last = last_line(text.encode())
        return GitRemoteError(
            f"git {command} failed with exit code {code} for {self.url}" + (f": {last}" if last else "")
        )


def _environment(remote: Remote, private: Path) -> dict[str, str]:
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(private), **remote.env}
    username = remote.username or url_user(remote.url)[0]
    password = remote.password or url_user(remote.url)[1]
    return environment(base, private, username, password, use_proxy=remote.use_proxy)
