"""Which integration a clone uses, the clone URL of owner/name on each provider, and where the credential comes
from."""

from __future__ import annotations

import pytest

from outpost.git.access import AccessError, choose, clone_url, credentials, is_owner_name
from outpost.wire import GitAccess


def access(provider: str = "git", url: str = "https://git.corp", **extra: object) -> GitAccess:
    return GitAccess(name="corp", provider=provider, url=url, **extra)


@pytest.mark.parametrize(
    ("provider", "base", "repo", "expected"),
    [
        ("github", "https://github.com", "acme/app", "https://github.com/acme/app.git"),
        ("github-enterprise", "https://ghe.corp/", "acme/app.git", "https://ghe.corp/acme/app.git"),
        ("gitlab", "https://gitlab.corp", "group/sub/app", "https://gitlab.corp/group/sub/app.git"),
        ("bitbucket-server", "https://bb.corp", "PROJ/app", "https://bb.corp/scm/PROJ/app.git"),
        ("bitbucket-server", "https://bb.corp/scm", "PROJ/app", "https://bb.corp/scm/PROJ/app.git"),
        ("bitbucket-server", "ssh://git@bb.corp:7999", "PROJ/app", "ssh://git@bb.corp:7999/PROJ/app.git"),
        ("git", "http://127.0.0.1:8080/git", "acme/app", "http://127.0.0.1:8080/git/acme/app.git"),
        ("git", "git@git.corp:", "acme/app", "git@git.corp:acme/app.git"),
        ("gitlab", "git@gitlab.corp:prefix", "acme/app", "git@gitlab.corp:prefix/acme/app.git"),
        ("github", "https://github.com", "https://other.corp/x/y.git", "https://other.corp/x/y.git"),
    ],
)
def test_owner_name_resolves_per_provider(provider: str, base: str, repo: str, expected: str) -> None:
    assert clone_url(access(provider, base), repo) == expected


def test_a_bitbucket_server_repository_is_project_and_name() -> None:
    with pytest.raises(AccessError, match="PROJECT/repo"):
        clone_url(access("bitbucket-server", "https://bb.corp"), "a/b/c")


def test_the_named_integration_or_else_the_default_is_chosen() -> None:
    corp, other = access(is_default=False), GitAccess(name="other", provider="git", url="https://o", is_default=True)
    given = {"corp": corp, "other": other}
    assert choose(given, "corp") is corp
    assert choose(given, None) is other
    with pytest.raises(AccessError, match="'nope' is not available"):
        choose(given, "nope")
    with pytest.raises(AccessError, match="no default git integration"):
        choose({"corp": corp}, None)


def test_credentials_come_from_the_runner_secret_and_a_token_gets_the_providers_user() -> None:
    assert credentials(access("github", password="tok"), {}) == ("x-access-token", "tok")
    assert credentials(access("gitlab", runner_secret="S"), {"S": "tok"}) == ("oauth2", "tok")
    assert credentials(access("git", username="ci", runner_secret="S"), {"S": "pw"}) == ("ci", "pw")
    assert credentials(access("git"), {}) == (None, None)
    with pytest.raises(AccessError, match="runner secret 'S'") as caught:
        credentials(access(runner_secret="S"), {"T": "value-of-T"})
    assert "value-of-T" not in str(caught.value)


def test_owner_name_is_told_from_urls() -> None:
    assert is_owner_name("acme/app")
    assert is_owner_name("group/sub/app")
    assert not is_owner_name("https://x/acme/app")
    assert not is_owner_name("git@x:acme/app")
    assert not is_owner_name("app")
