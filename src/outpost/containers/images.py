"""Image references and tags: parsing `[domain/]path[:tag][@digest]`, making tags of branch names, and picking the
registry credentials and push references for an image.

The grammar is the one `docker` and the registries share (distribution's `reference` package). A reference is kept
as written: `ubuntu` stays `ubuntu` and is not expanded to `docker.io/library/ubuntu`, so `str()` round-trips.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from outpost.containers.auth import RegistryAuth
from outpost.pipelines.variables import normalize_branch_tag

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
# The registries check the hex length of the algorithms they know; the grammar alone accepts any 32+ digits.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_NAME_MAX = 255  # domain/path together, as distribution limits it

# Docker Hub answers to several names; an image without a domain is on Docker Hub too.
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

TagPolicy = Literal["lowercase", "original"]


@dataclass(frozen=True)
class ImageRef:
    """One image reference, split into its parts; constructing one checks every part (`ValueError` if wrong)."""

    domain: str | None
    path: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if problem := _problem(self.domain, self.path, self.tag, self.digest):
            raise ValueError(f"invalid image reference {self._text()!r}: {problem}")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split `text` as docker does; the first component is the domain only if it looks like a host (it holds
        `.` or `:`, or is `localhost`), so `library/ubuntu` is a path and `localhost:5000/app` is not."""
        if not text:
            raise ValueError("invalid image reference '': it is empty")
        name, _, digest = text.partition("@")
        tag: str | None = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        domain: str | None = None
        first, sep, rest = name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            domain, name = first, rest
        parts = (domain, name, tag, digest if "@" in text else None)
        # Checked here too so that the message names the text as written, not as re-assembled from its parts.
        if problem := _problem(*parts):
            raise ValueError(f"invalid image reference {text!r}: {problem}")
        return cls(*parts)

    @property
    def repository(self) -> str:
        """The reference without tag or digest: `domain/path`, or `path` when there is no domain."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def name(self) -> str:
        """The last path component: `app` for `registry.example.com/team/app:1.0`."""
        return self.path.rpartition("/")[2]

    def with_tag(self, tag: str | None) -> ImageRef:
        """The same image under another tag (None removes it); a digest is kept."""
        return dataclasses.replace(self, tag=tag)

    def with_domain(self, domain: str | None) -> ImageRef:
        """The same path on another registry (None: no domain), replacing any domain it had."""
        return dataclasses.replace(self, domain=domain)

    def __str__(self) -> str:
        return self._text()

    def _text(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image(text: str) -> ImageRef:
    """`ImageRef.parse`, for callers that prefer a function."""
    return ImageRef.parse(text)


def _problem(domain: str | None, path: str, tag: str | None, digest: str | None) -> str | None:
    """What is wrong with these parts of a reference, or None."""
    if domain is not None and not _DOMAIN.fullmatch(domain):
        return f"{domain!r} is not a registry host[:port]"
    if not path:
        return "the repository name is empty"
    if not _PATH.fullmatch(path):
        if _PATH.fullmatch(path.lower()):
            return "the repository name must be lowercase"
        return (
            "the repository name may hold only lowercase letters, digits and single separators (`.`, `_`, `__`, `-`) "
            "between `/`-separated components"
        )
    if len(path) + (len(domain) + 1 if domain else 0) > _NAME_MAX:
        return f"the repository name is longer than {_NAME_MAX} characters"
    if tag is not None and (problem := tag_problem(tag)):
        return problem
    if digest is not None:
        if not _DIGEST.fullmatch(digest):
            return f"{digest!r} is not a digest (ALGORITHM:HEX)"
        algorithm, _, hex_digits = digest.partition(":")
        expected = _DIGEST_HEX_LENGTH.get(algorithm)
        if expected is not None and len(hex_digits) != expected:
            return f"a {algorithm} digest has {expected} hex digits, not {len(hex_digits)}"
    return None


def tag_problem(tag: str) -> str | None:
    """Why `tag` is not a legal Docker tag, or None if it is."""
    if not tag:
        return "the tag is empty"
    if len(tag) > 128:
        return f"the tag is {len(tag)} characters long; at most 128 are allowed"
    if not _TAG.fullmatch(tag):
        return f"the tag {tag!r} may hold only letters, digits, `_`, `.` and `-`, and may not start with `.` or `-`"
    return None


def normalize_tag(text: str, policy: TagPolicy = "lowercase") -> str:
    """A legal Docker tag made of `text` (a branch name, usually) the way CF_BRANCH_TAG_NORMALIZED is made: illegal
    characters are dropped (`feature/login` gives `featurelogin`), then `policy` decides the case, as a build
    step's `tag_policy` does. `ValueError` if nothing usable is left or the policy is unknown."""
    if policy not in ("lowercase", "original"):
        raise ValueError(f"unknown tag policy {policy!r}: use `lowercase` or `original`")
    tag = normalize_branch_tag(text)
    if not tag:
        raise ValueError(f"{text!r} holds no character a Docker tag may start with")
    return tag.lower() if policy == "lowercase" else tag


def registry_host(domain: str) -> str:
    """The HOST[:PORT] of a registry as integrations may write it (`https://Index.Docker.io/v1/` gives
    `index.docker.io`): scheme, path and case do not matter when matching it against an image."""
    host = domain.strip()
    host = host.split("://", 1)[1] if "://" in host else host
    return host.split("/", 1)[0].lower()


def canonical_host(domain: str | None) -> str:
    """A registry's HOST[:PORT] as compared: lower case, Docker Hub's other names (and no domain) as `docker.io`."""
    host = DOCKER_HUB if domain is None else registry_host(domain)
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def domain_of(reference: str) -> str:
    """The registry an image reference lives in, as Docker reads it — the part before the first `/` when it looks
    like a host (has `.` or `:`, or is `localhost`), else Docker Hub — even for a reference `parse` would refuse."""
    first, slash, _ = reference.strip().partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return DOCKER_HUB
    return canonical_host(first)


def auth_for(ref: ImageRef | str, auths: Mapping[str, RegistryAuth]) -> RegistryAuth | None:
    """The first credentials (in `auths` order) for the registry the image lives on, or None.

    Hosts match exactly, port included (`registry:5000` is not `registry`); Docker Hub images (no domain, or any of
    its names) match an integration written with any of Docker Hub's names."""
    image = ImageRef.parse(ref) if isinstance(ref, str) else ref
    wanted = canonical_host(image.domain)
    return next((auth for auth in auths.values() if canonical_host(auth.domain) == wanted), None)


def push_targets(image_name: str, tags: Sequence[str], registry: RegistryAuth) -> list[str]:
    """The references `domain/image_name:tag` that push the image to `registry`, one per distinct tag, in order.

    An `image_name` already on that registry is not prefixed again. `ValueError` if `image_name` carries a tag or
    digest (they come from `tags`) or a tag, or the result, is not a legal reference."""
    image = ImageRef.parse(image_name)
    if image.tag is not None or image.digest is not None:
        raise ValueError(f"image name {image_name!r} should not carry a tag or digest: pass them as tags")
    host = registry_host(registry.domain)
    if not host:
        raise ValueError(f"registry {registry.name or registry.domain!r} has no domain")
    if image.domain is not None and canonical_host(image.domain) == canonical_host(host):
        path = image.path
    else:
        path = image.repository
    try:
        base = ImageRef(host, path)
    except ValueError:
        raise ValueError(f"image name {image_name!r} cannot be pushed under {host!r}") from None
    return [str(base.with_tag(tag)) for tag in dict.fromkeys(tags)]
