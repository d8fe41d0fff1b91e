"""Registry integrations as builds use them: which ones a pipeline refers to (by name, or by the domain of an image
reference), and on the runner, their credentials resolved against the runner's own secrets.

`Registries` never fails to build: a registry whose runner secret this runner lacks is kept as a problem, and
the error (a RegistryError naming the integration and the secret) is raised only when a step actually uses that
registry, so a build that never touches it is not held back by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from outpost.containers.auth import RegistryAuth
from outpost.containers.images import canonical_host, domain_of
from outpost.errors import ExecutorError
from outpost.pipelines.spec import Pipeline
from outpost.pipelines.variables import substitute
from outpost.wire import RegistryAccess

_NAME_KEYS = frozenset({"registry", "registry_context"})  # a registry integration's name
_NAMES_KEYS = frozenset({"registry_contexts"})  # a list of them
_IMAGE_KEYS = frozenset({"image", "candidate"})  # an image reference (or a list of them, in a `matrix`)


class RegistryError(ExecutorError):
    """A step cannot use a registry integration: the message says why (never with a secret in it). An
    ExecutorError, so the engine ends the step that asked with that message, as for any step it cannot run."""


@dataclass(frozen=True)
class References:
    """The registry integrations a pipeline refers to: by `names`, and through images in `domains`."""

    names: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()


def references(pipeline: Pipeline, variables: Mapping[str, str]) -> References:
    """Every `registry`, `registry_context` and `registry_contexts` value and the domain of every `image` and
    `candidate` reference in the steps (children, hooks, `scale`/`matrix`, inline compositions and services
    included) and the pipeline's hooks and services, after substituting `variables`. A name or domain still
    holding `${{...}}` (a step's built image, a variable set only at run time) is left out."""
    names: set[str] = set()
    domains: set[str] = set()

    def text(value: object) -> str:
        return substitute(value, variables).strip() if isinstance(value, str) else ""

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in _NAME_KEYS:
                names.update(_known([text(value)]))
            elif key in _NAMES_KEYS and isinstance(value, list):
                names.update(_known(map(text, value)))
            elif key in _IMAGE_KEYS:
                for image in map(text, value if isinstance(value, list) else [value]):
                    if image and (domain := _image_domain(image)):
                        domains.add(domain)
            walk(value)

    walk(pipeline.hooks)
    walk(pipeline.services)
    for step in pipeline.all_steps():
        walk(step.fields)
    return References(frozenset(names), frozenset(domains))


def _known(values: Iterable[str]) -> list[str]:
    return [v for v in values if v and "${{" not in v]


def _image_domain(image: str) -> str | None:
    """`domain_of`, or None while the part that decides it still holds a `${{...}}` reference."""
    first, slash, _ = image.partition("/")
    return None if "${{" in (first if slash else image) else domain_of(image)


class Registries:
    """The registry integrations a build was given (`RunBuildTask.registries`), by integration name, with each
    `runner_secret` looked up in the runner's own secrets (`--secrets-file`).

    Building one never raises: `auths` holds the usable ones, `problems` why the others cannot be used (a runner
    secret this runner lacks). The lookups raise RegistryError, naming the integration and the secret, only
    when a step asks for one of those."""

    def __init__(
        self, registries: Mapping[str, RegistryAccess] | None = None, runner_secrets: Mapping[str, str] | None = None
    ) -> None:
        registries = registries or {}
        secrets = runner_secrets or {}
        self.auths: dict[str, RegistryAuth] = {}
        self.problems: dict[str, str] = {}
        self.domains = {name: canonical_host(access.domain) for name, access in registries.items()}
        self.default_name = next((name for name, access in registries.items() if access.is_default), None)
        for name, access in registries.items():
            password = access.password
            if access.runner_secret:
                if access.runner_secret not in secrets:
                    self.problems[name] = (
                        f"registry integration {name!r} keeps its password in runner secret "
                        f"{access.runner_secret!r}, which this runner does not have: add it to the file given by "
                        "--secrets-file (OUTPOST_RUNNER_SECRETS_FILE) and restart the runner"
                    )
                    continue
                password = secrets[access.runner_secret]
            self.auths[name] = RegistryAuth(
                domain=access.domain, username=access.username, password=password, insecure=access.insecure, name=name
            )

    def get(self, name: str) -> RegistryAuth:
        """The integration named (a step's `registry`); RegistryError if this build cannot use it."""
        if name in self.auths:
            return self.auths[name]
        if name in self.problems:
            raise RegistryError(self.problems[name])
        raise RegistryError(
            f"registry integration {name!r} is not available to this build: add it with `outpost integration add "
            f"registry {name} --domain HOST[:PORT] ...` (a name known only while the build runs, from cf_export, "
            "is not: the control plane picks a build's registries from its YAML and variables)"
        )

    def default(self) -> RegistryAuth | None:
        """The account's default registry (where build steps push, and push steps with no `registry`); None if
        the account has none, RegistryError if this runner cannot use it."""
        return None if self.default_name is None else self.get(self.default_name)

    def for_domain(self, domain: str) -> RegistryAuth | None:
        """The credentials to pull from or push to `domain` (HOST[:PORT]); None when no integration covers it
        (an anonymous pull). Among several: the default one, else the first by name that this runner can use.
        RegistryError only when every integration that covers it is unusable."""
        wanted = canonical_host(domain)
        covering = sorted(
            (n for n, d in self.domains.items() if d == wanted), key=lambda n: (n != self.default_name, n)
        )
        for name in covering:
            if name in self.auths:
                return self.auths[name]
        if covering:
            raise RegistryError(self.problems[covering[0]])
        return None

    def for_image(self, reference: str) -> RegistryAuth | None:
        """`for_domain` of the registry the image reference lives in."""
        return self.for_domain(domain_of(reference))

    def all(self) -> list[RegistryAuth]:
        """Every one this runner can use, by name (for a tool that logs in to several); the unusable ones are
        left out: ask `for_image` first to get their error rather than an anonymous pull's."""
        return [self.auths[name] for name in sorted(self.auths)]

    def passwords(self) -> set[str]:
        """Every password this build can use, to be masked in its logs."""
        return {auth.password for auth in self.auths.values() if auth.password}
