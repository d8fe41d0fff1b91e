"""Git integrations on the runner: which integration a clone uses, the clone URL of an `owner/name`
repository on its provider, and the credential (sent by the control plane, or a runner-side secret).

Clone URLs of `owner/name` against an integration's base URL:
    github, github-enterprise, gitlab, git    <url>/<owner>/<name>.git   (GitLab subgroups: group/sub/name)
    bitbucket-server                          <url>/scm/<project>/<repo>.git  over HTTP(S),
                                              <url>/<project>/<repo>.git over ssh
An scp-like base (`git@host:` or `git@host:prefix`) is joined with `:` (or `/` after a prefix).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from outpost.wire import GitAccess

# The user name that goes with a token when the integration names none.
TOKEN_USERS = {"github": "x-access-token", "github-enterprise": "x-access-token", "gitlab": "oauth2"}
FALLBACK_USER = "git"
_OWNER_NAME = re.compile(r"[\w.-]+(/[\w.-]+)+")
_SCP_BASE = re.compile(r"(?P<user>[^@/:\s]+@)?(?P<host>[^@/:\s]+):(?P<prefix>.*)")


class AccessError(Exception):
    """The build cannot use the integration: the message says why (never with a secret in it)."""


def is_owner_name(repo: str) -> bool:
    return bool(_OWNER_NAME.fullmatch(repo)) and "://" not in repo


def choose(integrations: Mapping[str, GitAccess], name: str | None) -> GitAccess:
    """The integration named, or the default one; AccessError if the build was given neither."""
    if name:
        found = integrations.get(name)
        if found is None:
            raise AccessError(
                f"git integration {name!r} is not available to this build: add it with `outpost integration add "
                f"git {name} ...` (YAML read from a repository can use its pipeline's integration and the default)"
            )
        return found
    for access in integrations.values():
        if access.is_default:
            return access
    raise AccessError("no git integration was named (`git:`) and the account has no default git integration")


def clone_url(access: GitAccess, repo: str) -> str:
    """The URL to clone `repo` from: a full URL as it is, `owner/name` resolved on the integration's provider."""
    if not is_owner_name(repo):
        return repo
    path = repo.strip("/").removesuffix(".git")
    base = access.url.rstrip("/")
    if "://" not in base and (scp := _SCP_BASE.fullmatch(base)):
        prefix = scp["prefix"].strip("/")
        return f"{scp['user'] or ''}{scp['host']}:{prefix + '/' if prefix else ''}{path}.git"
    if access.provider == "bitbucket-server":
        if path.count("/") != 1:
            raise AccessError(f"a Bitbucket Server repository is PROJECT/repo, not {repo!r}")
        if base.startswith(("http://", "https://")) and not base.endswith("/scm"):
            base += "/scm"
    return f"{base}/{path}.git"


def credentials(access: GitAccess, runner_secrets: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(user name, password or token) for the integration; the password from a runner secret if it names one."""
    password = access.password
    if access.runner_secret:
        if access.runner_secret not in runner_secrets:
            raise AccessError(
                f"git integration {access.name!r} keeps its credential in runner secret {access.runner_secret!r}, "
                "which this runner does not have: add it to the file given by --secrets-file "
                "(OUTPOST_RUNNER_SECRETS_FILE) and restart the runner"
            )
        password = runner_secrets[access.runner_secret]
    if not password:
        return access.username, None
    return access.username or TOKEN_USERS.get(access.provider, FALLBACK_USER), password
