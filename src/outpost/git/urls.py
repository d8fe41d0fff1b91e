"""Repository URLs: what git can clone from (http(s), ssh, git, file, scp-like `user@host:path`), split into
scheme, host and path, with credentials written into an http(s) URL taken out; the folder a checkout goes
into, and a commit's web page."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

_SCHEMES = ("https", "http", "ssh", "git", "file")
_SCP_LIKE = re.compile(r"(?:[^@/:]+@)?(?P<host>[^@/:]+):(?P<path>.+)")


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


def url_user(url: str) -> tuple[str | None, str | None]:
    """The user name and password written into an http(s) URL, if any."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None, None
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return user, password


def without_credentials(url: str) -> str:
    """The URL without the user name and password an http(s) URL may carry (to name it in a message)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
