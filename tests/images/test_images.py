"""Image references, tags made of branch names, and which credentials and references a push uses."""

from __future__ import annotations

import re

import pytest

from outpost.containers.auth import RegistryAuth
from outpost.containers.images import ImageRef, auth_for, normalize_tag, parse_image, push_targets, registry_host

SHA256 = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("ubuntu", None, "ubuntu", None, None),
        ("ubuntu:22.04", None, "ubuntu", "22.04", None),
        ("library/ubuntu", None, "library/ubuntu", None, None),
        ("docker.io/library/ubuntu:latest", "docker.io", "library/ubuntu", "latest", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/team/app:v1", "localhost:5000", "team/app", "v1", None),
        ("registry:5000/app", "registry:5000", "app", None, None),
        ("Registry.Example.COM/app", "Registry.Example.COM", "app", None, None),
        ("quay.io/org/sub/app:1.0-rc_1", "quay.io", "org/sub/app", "1.0-rc_1", None),
        ("[::1]:5000/app:dev", "[::1]:5000", "app", "dev", None),
        (f"app@{SHA256}", None, "app", None, SHA256),
        (f"gcr.io/p/app:1@{SHA256}", "gcr.io", "p/app", "1", SHA256),
        ("my_app/a__b/c-d/e--f/g.h", None, "my_app/a__b/c-d/e--f/g.h", None, None),
        ("app:_private", None, "app", "_private", None),
        ("app:UPPER.case-Tag", None, "app", "UPPER.case-Tag", None),
        ("localhost:5000", None, "localhost", "5000", None),
        ("app:" + "t" * 128, None, "app", "t" * 128, None),
        ("a" * 255, None, "a" * 255, None, None),
    ],
)
def test_a_valid_reference_splits_into_its_parts_and_round_trips(
    text: str, domain: str | None, path: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == text
    assert parse_image(text) == ref


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Ubuntu", "must be lowercase"),
        ("docker.io/Library/ubuntu", "must be lowercase"),
        ("Team/app", "must be lowercase"),
        ("app:", "the tag is empty"),
        ("app:-dash", "may not start with"),
        ("app:.dot", "may not start with"),
        ("app:bad/tag", "is not a registry host"),  # `app:bad` has a `:`: it is read as a host
        ("app:bad+tag", "may hold only letters"),
        ("app:" + "t" * 129, "at most 128"),
        ("/app", "the repository name may hold only"),
        ("app/", "the repository name may hold only"),
        ("a//b", "the repository name may hold only"),
        ("-app", "the repository name may hold only"),
        ("app-", "the repository name may hold only"),
        ("a...b", "the repository name may hold only"),
        ("a___b", "the repository name may hold only"),
        ("my app", "the repository name may hold only"),
        (" app", "the repository name may hold only"),
        ("localhost:5000/", "the repository name is empty"),
        ("-bad.example.com/app", "is not a registry host"),
        ("example.com:port/app", "is not a registry host"),
        ("app@", "is not a digest"),
        ("app@sha256:abc", "is not a digest"),
        ("app@sha256:" + "a" * 63 + "g", "is not a digest"),
        ("app@sha256:" + "a" * 40, "64 hex digits"),
        ("app@sha256:" + "a" * 64 + "@x", "is not a digest"),
        ("a" * 256, "longer than 255"),
        ("example.com/" + "a" * 244, "longer than 255"),
    ],
)
def test_an_invalid_reference_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference") as caught:
        ImageRef.parse(text)
    assert reason in str(caught.value)
    assert repr(text) in str(caught.value)


def test_a_reference_built_from_parts_is_checked_too() -> None:
    with pytest.raises(ValueError, match="must be lowercase"):
        ImageRef(None, "App", None, None)


@pytest.mark.parametrize(
    ("text", "repository", "name"),
    [
        ("ubuntu:22.04", "ubuntu", "ubuntu"),
        ("registry.example.com/team/app:1.0", "registry.example.com/team/app", "app"),
        (f"localhost:5000/a/b/c@{SHA256}", "localhost:5000/a/b/c", "c"),
    ],
)
def test_repository_and_name_leave_out_tag_and_digest(text: str, repository: str, name: str) -> None:
    ref = ImageRef.parse(text)
    assert (ref.repository, ref.name) == (repository, name)


def test_with_tag_and_with_domain_change_only_that_part() -> None:
    ref = ImageRef.parse("quay.io/org/app:1.0")
    assert str(ref.with_tag("2.0")) == "quay.io/org/app:2.0"
    assert str(ref.with_tag(None)) == "quay.io/org/app"
    assert str(ref.with_domain("registry.example.com:5000")) == "registry.example.com:5000/org/app:1.0"
    assert str(ref.with_domain(None)) == "org/app:1.0"
    assert str(ImageRef.parse(f"app@{SHA256}").with_tag("v1")) == f"app:v1@{SHA256}"


@pytest.mark.parametrize(("method", "value"), [("with_tag", "-bad"), ("with_tag", ""), ("with_domain", "bad_host")])
def test_with_tag_and_with_domain_refuse_illegal_parts(method: str, value: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference"):
        getattr(ImageRef.parse("app:1"), method)(value)


@pytest.mark.parametrize(
    ("text", "policy", "tag"),
    [
        ("main", "lowercase", "main"),
        ("feature/Login-2", "lowercase", "featurelogin-2"),
        ("feature/Login-2", "original", "featureLogin-2"),
        ("release/1.2.x", "original", "release1.2.x"),
        ("-.hidden", "original", "hidden"),
        ("_under", "original", "_under"),
        ("fix #12: ünïcode!", "original", "fix12ncode"),
        ("x" * 200, "original", "x" * 128),
    ],
)
def test_a_branch_name_becomes_a_legal_tag(text: str, policy: str, tag: str) -> None:
    assert normalize_tag(text, policy) == tag  # type: ignore[arg-type]
    assert ImageRef.parse(f"app:{tag}").tag == tag


def test_the_default_tag_policy_is_lowercase() -> None:
    assert normalize_tag("Feature/ABC") == "featureabc"


@pytest.mark.parametrize(("text", "policy"), [("///", "lowercase"), ("", "original"), ("--", "lowercase")])
def test_a_name_with_nothing_usable_gives_no_tag(text: str, policy: str) -> None:
    with pytest.raises(ValueError, match="holds no character"):
        normalize_tag(text, policy)  # type: ignore[arg-type]


def test_an_unknown_tag_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tag policy"):
        normalize_tag("main", "upper")  # type: ignore[arg-type]


HUB = RegistryAuth("docker.io", "hubuser", "x", name="hub")
HUB_INDEX = RegistryAuth("https://index.docker.io/v1/", "indexuser", "x", name="hub-index")
QUAY = RegistryAuth("quay.io", "q", "x", name="quay")
LOCAL = RegistryAuth("registry.local:5000", "l", "x", insecure=True, name="local")
LOCAL_NO_PORT = RegistryAuth("registry.local", "l2", "x", name="local-no-port")


@pytest.mark.parametrize(
    ("image", "auths", "expected"),
    [
        ("ubuntu", [HUB], HUB),
        ("library/ubuntu", [HUB_INDEX], HUB_INDEX),
        ("docker.io/org/app", [QUAY, HUB], HUB),
        ("index.docker.io/org/app", [HUB], HUB),
        ("registry-1.docker.io/org/app:1", [HUB_INDEX], HUB_INDEX),
        ("ubuntu", [HUB_INDEX, HUB], HUB_INDEX),
        ("quay.io/org/app", [HUB, QUAY], QUAY),
        ("QUAY.io/org/app", [QUAY], QUAY),
        ("registry.local:5000/app", [LOCAL_NO_PORT, LOCAL], LOCAL),
        ("registry.local/app", [LOCAL, LOCAL_NO_PORT], LOCAL_NO_PORT),
        ("registry.local:5001/app", [LOCAL, LOCAL_NO_PORT], None),
        ("quay.io/org/app", [HUB, LOCAL], None),
        ("ubuntu", [QUAY], None),
        ("ubuntu", [], None),
    ],
)
def test_credentials_are_those_of_the_images_registry(
    image: str, auths: list[RegistryAuth], expected: RegistryAuth | None
) -> None:
    by_name = {auth.name: auth for auth in auths}
    assert auth_for(image, by_name) is expected
    assert auth_for(ImageRef.parse(image), by_name) is expected


@pytest.mark.parametrize(
    ("written", "host"),
    [
        ("quay.io", "quay.io"),
        ("https://Index.Docker.io/v1/", "index.docker.io"),
        ("http://registry.local:5000", "registry.local:5000"),
        (" registry.local:5000/ ", "registry.local:5000"),
    ],
)
def test_a_registry_domain_is_matched_by_its_host_and_port(written: str, host: str) -> None:
    assert registry_host(written) == host


@pytest.mark.parametrize(
    ("image_name", "tags", "registry", "expected"),
    [
        ("org/app", ["1.0", "latest"], QUAY, ["quay.io/org/app:1.0", "quay.io/org/app:latest"]),
        ("quay.io/org/app", ["1.0"], QUAY, ["quay.io/org/app:1.0"]),
        ("app", ["v1", "v1", "main"], LOCAL, ["registry.local:5000/app:v1", "registry.local:5000/app:main"]),
        ("registry.local:5000/app", ["v1"], LOCAL, ["registry.local:5000/app:v1"]),
        ("registry.local/app", ["v1"], LOCAL, ["registry.local:5000/registry.local/app:v1"]),
        ("docker.io/org/app", ["1"], HUB_INDEX, ["index.docker.io/org/app:1"]),
        ("org/app", ["1"], HUB, ["docker.io/org/app:1"]),
        ("org/app", [], QUAY, []),
    ],
)
def test_push_targets_put_the_image_under_the_registry_once(
    image_name: str, tags: list[str], registry: RegistryAuth, expected: list[str]
) -> None:
    assert push_targets(image_name, tags, registry) == expected


@pytest.mark.parametrize(
    ("image_name", "tags", "registry", "message"),
    [
        ("org/app:1.0", ["2"], QUAY, "should not carry a tag or digest"),
        (f"org/app@{SHA256}", ["2"], QUAY, "should not carry a tag or digest"),
        ("Org/App", ["1"], QUAY, "must be lowercase"),
        ("org/app", ["bad/tag"], QUAY, "may hold only letters"),
        ("localhost:5000/app", ["1"], QUAY, "cannot be pushed under 'quay.io'"),
        ("app", ["1"], RegistryAuth(""), "has no domain"),
    ],
)
def test_push_targets_refuse_what_cannot_be_pushed(
    image_name: str, tags: list[str], registry: RegistryAuth, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        push_targets(image_name, tags, registry)
