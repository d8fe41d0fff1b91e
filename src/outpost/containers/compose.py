"""The compose subset that `composition` steps and freestyle `services` run.

A composition is read into `Service`s with an image, command, environment, ports, volumes and a start order.
Compose `${VAR}` interpolation draws only on the step's `composition_variables`, never on the runner's own
environment. Fields this runner cannot honour are ignored with a warning rather than half-supported; `build:` is
refused because images are built by build steps. Here too is how a freestyle `volumes:` entry maps onto the build
volume on the host.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import yaml

from outpost.containers.interpolation import VARIABLE_NAME, Interpolator
from outpost.errors import PipelineError, Problem
from outpost.pipelines.fields import describe

# `composition_variables` as written (KEY=VALUE) or already split.
Variables: TypeAlias = Sequence[str] | Mapping[str, str]

VOLUME_PATH = "/codefresh/volume"  # where steps see the build volume

_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_FIELDS = ("image", "command", "entrypoint", "environment", "ports", "volumes", "depends_on", "working_dir")
_MAX_VALUES = 100_000  # YAML aliases can make a small file expand to billions of values
_BUILD_REFUSED = (
    "`build` is not supported: services in a composition must use an image: build it in a build step first and "
    "use ${{step}}"
)
_CF_VOLUME_PATH = re.compile(r"\$\{\{\s*CF_VOLUME_PATH\s*\}\}")
_CF_VOLUME_NAME = re.compile(r"\$\{\{\s*CF_VOLUME_NAME\s*\}\}")


class CompositionError(PipelineError):
    """A composition cannot be run; `messages` holds every problem found, and the error's text is one per line.

    The composition is read at run time, when the codefresh.yml positions are gone, so its problems carry none."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = list(messages)
        super().__init__([Problem("", 0, 0, message) for message in self.messages])
        self.args = ("\n".join(self.messages),)


@dataclass(frozen=True)
class Service:
    """One container of a composition, its fields converted to one form each."""

    name: str
    image: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    working_dir: str | None = None


@dataclass(frozen=True)
class Composition:
    """The services of a composition, in the order written; `candidates` names those the step tests (their exit
    decides the step) and `warnings` what was ignored, for the step's log."""

    services: dict[str, Service]
    warnings: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)

    def order(self) -> list[Service]:
        """The services in a start order where each comes after those it depends on; otherwise as written."""
        names, problems = _start_order(self.services, set(self.services))
        if problems:
            raise CompositionError(problems)
        return [self.services[name] for name in names]


def load_composition(
    composition: Mapping[str, Any] | str,
    *,
    variables: Variables = (),
    base: Path | str | None = None,
) -> Composition:
    """Read a `composition` field: an inline compose object (with `services:`, or a bare mapping of services), or
    the path of a compose file relative to `base`, the step's working directory (it may not point outside it).

    `variables` are the step's `composition_variables`, the only source of `${VAR}` values; `$$` is a literal `$`,
    and `${{NAME}}` references left unresolved are kept as written. In `environment`, a name without a value takes
    it from `variables`, or is left out, as compose leaves out a name its shell does not know. Raises
    `CompositionError` listing every problem."""
    reader = _Reader(variables)
    if isinstance(composition, str):
        if base is None:
            raise ValueError("a composition file needs the folder its path is relative to")
        try:
            document = _read_file(composition, Path(base))
        except CompositionError as exc:
            raise reader.fatal(*exc.messages) from None
    else:
        document = composition
    found = reader.services_of(document)
    services: dict[str, Service] = {}
    for name, raw in found.items():
        prefix = f"composition: service `{name}`"
        if not _SERVICE_NAME.fullmatch(name):
            reader.problem(f"{prefix}: a service name may hold only letters, digits, `_`, `.` and `-`")
        fields = reader.service(raw, prefix)
        if fields is None:
            continue
        if "image" not in raw:
            reader.problem(f"{prefix}: `image` is required")
        elif "image" in fields:
            services[name] = Service(name=name, **fields)
    reader.problems.extend(_start_order(services, set(found))[1])
    return reader.finish(services)


def merge_candidates(
    composition: Composition,
    candidates: Mapping[str, Mapping[str, Any]],
    *,
    variables: Variables = (),
) -> Composition:
    """Add the step's `composition_candidates`, read like services (pass the same `variables`).

    A candidate named like a composition service is laid over it: each field it sets replaces the service's, except
    `environment`, which is merged name by name, the candidate winning. A candidate with neither an image nor a
    service to inherit one from is an error."""
    reader = _Reader(variables)
    services = dict(composition.services)
    names: list[str] = []
    for name, raw in candidates.items():
        prefix = f"composition_candidates: `{name}`"
        if not _SERVICE_NAME.fullmatch(name):
            reader.problem(f"{prefix}: a candidate name may hold only letters, digits, `_`, `.` and `-`")
        fields = reader.service(raw, prefix)
        if fields is None:
            continue
        names.append(name)
        under = services.get(name)
        if under is not None:
            if "environment" in fields:
                fields["environment"] = {**under.environment, **fields["environment"]}
            services[name] = replace(under, **fields)
        elif "image" not in raw:
            reader.problem(f"{prefix}: `image` is required (there is no composition service `{name}` to inherit it)")
        elif "image" in fields:
            services[name] = Service(name=name, **fields)
    reader.problems.extend(_start_order(services, set(services) | set(names))[1])
    merged = reader.finish(services)
    return Composition(
        merged.services,
        [*composition.warnings, *merged.warnings],
        list(dict.fromkeys([*composition.candidates, *names])),
    )


def _read_file(path: str, base: Path) -> Any:
    """The YAML document of a compose file under `base`, refusing paths (symbolic links too) that leave it."""
    root = base.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise CompositionError([f"composition: `{path}` is outside the working directory"])
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompositionError(
            [f"composition: `{path}` is not a file in the working directory (stored compositions are not supported)"]
        ) from None
    except UnicodeDecodeError:
        raise CompositionError([f"composition: `{path}` is not UTF-8 text"]) from None
    except OSError as exc:
        raise CompositionError([f"composition: cannot read `{path}`: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CompositionError([f"composition: `{path}` is not valid YAML{where}: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise CompositionError([f"composition: `{path}` is not valid YAML: {exc}"]) from None
    except RecursionError:
        raise CompositionError([f"composition: `{path}` is nested too deeply"]) from None


def _start_order(services: Mapping[str, Service], known: set[str]) -> tuple[list[str], list[str]]:
    """A start order of `services`, and the problems with their `depends_on`: names not in `known`, and cycles.

    Services are placed in rounds, each round taking, in the order written, every service whose dependencies are
    placed; a dependency outside `services` (one that failed to load) does not hold anything back."""
    problems = [
        f"composition: service `{name}`: `depends_on` names `{dependency}`, which is not a service of the composition"
        for name, service in services.items()
        for dependency in service.depends_on
        if dependency not in known
    ]
    placed: dict[str, None] = {}
    waiting = list(services)
    while waiting:
        ready = [n for n in waiting if all(d in placed or d not in services for d in services[n].depends_on)]
        if not ready:
            problems.append(f"composition: services depend on each other in a cycle: {_cycle(services, waiting)}")
            break
        placed.update(dict.fromkeys(ready))
        waiting = [n for n in waiting if n not in placed]
    return list(placed), problems


def _cycle(services: Mapping[str, Service], waiting: list[str]) -> str:
    """One cycle among `waiting`, each of which waits on another of them: `a` → `b` → `a`."""
    path = [waiting[0]]
    while True:
        step = next(d for d in services[path[-1]].depends_on if d in waiting)
        if step in path:
            return " → ".join(f"`{n}`" for n in [*path[path.index(step) :], step])
        path.append(step)


class _Reader:
    """Reads one composition's (or one set of candidates') mappings, collecting every problem and warning."""

    def __init__(self, variables: Variables) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.variables = self._split(variables)
        self.interpolator = Interpolator(self.variables)
        self.budget = _MAX_VALUES

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def fatal(self, *messages: str) -> CompositionError:
        """An error for a problem that stops the reading, with the problems found before it."""
        return CompositionError([*self.problems, *messages])

    def finish(self, services: dict[str, Service]) -> Composition:
        """The composition read, or `CompositionError` with every problem."""
        if self.problems:
            raise CompositionError(self.problems)
        unset = [
            f"composition: variable `{name}` is not set: an empty string is used" for name in self.interpolator.unset
        ]
        return Composition(services, [*self.warnings, *unset])

    def _split(self, variables: Variables) -> dict[str, str]:
        if isinstance(variables, Mapping):
            return {str(name): str(value) for name, value in variables.items()}
        if isinstance(variables, str):
            raise ValueError("composition_variables must be a list of KEY=VALUE, not one string")
        split: dict[str, str] = {}
        for entry in variables:
            name, sep, value = str(entry).partition("=")
            if sep and VARIABLE_NAME.fullmatch(name):
                split[name] = value
            else:
                self.problem(f"composition_variables: {describe(entry)} is not KEY=VALUE")
        return split

    def services_of(self, document: Any) -> dict[str, Any]:
        """The service mappings of a compose document, by name; the top-level keys it ignores become warnings."""
        if not isinstance(document, Mapping):
            raise self.fatal(f"composition: expected a mapping of services, found {describe(document)}")
        if "services" not in document:  # the older form: services at the top
            found = {k: v for k, v in document.items() if k != "version" and not str(k).startswith("x-")}
        else:
            found = document["services"]
            if not isinstance(found, Mapping):
                raise self.fatal(f"composition: `services` must be a mapping, not {describe(found)}")
            for key in document:
                if key not in ("version", "services", "name") and not str(key).startswith("x-"):
                    self.warnings.append(f"composition: top-level `{key}` is ignored")
        if not found:
            raise self.fatal("composition: there are no services")
        return {str(name): raw for name, raw in found.items()}

    def service(self, raw: Any, prefix: str) -> dict[str, Any] | None:
        """The fields a service mapping sets, converted; None if it is not a mapping at all."""
        if not isinstance(raw, Mapping):
            self.problem(f"{prefix}: expected a mapping of fields, found {describe(raw)}")
            return None
        fields: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "build":
                self.problem(f"{prefix}: {_BUILD_REFUSED}")
            elif key not in _FIELDS:
                if not str(key).startswith("x-"):
                    self.warnings.append(f"{prefix}: `{key}` is ignored")
            else:
                where = f"{prefix}: `{key}`"
                try:
                    fields[key] = self._convert(key, self._interpolate(value, where), where)
                except ValueError as exc:
                    self.problem(f"{where}: {exc}")
        return fields

    def _interpolate(self, value: Any, where: str) -> Any:
        """`value` with `${VAR}` replaced in every string inside it; a bad expression is a problem, kept as is."""
        self.budget -= 1
        if self.budget < 0:
            raise self.fatal(f"composition: more than {_MAX_VALUES} values: is it an alias bomb?")
        if isinstance(value, str):
            try:
                return self.interpolator(value)
            except ValueError as exc:
                self.problem(f"{where}: {exc}")
                return value
        if isinstance(value, list):
            return [self._interpolate(item, where) for item in value]
        if isinstance(value, Mapping):
            return {key: self._interpolate(item, where) for key, item in value.items()}
        return value

    def _convert(self, key: str, value: Any, where: str) -> Any:
        """A field's value in its one form; ValueError says what is wrong with it."""
        if key == "image":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"expected an image reference, found {describe(value)}")
            return value
        if key in ("command", "entrypoint"):
            return _argv(value)
        if key == "environment":
            return self._environment(value)
        if key in ("ports", "volumes"):
            return [_scalar(item) for item in _list(value)]
        if key == "depends_on":
            return self._depends_on(value, where)
        if value is None or isinstance(value, str):  # working_dir
            return value
        raise ValueError(f"expected a path, found {describe(value)}")

    def _environment(self, value: Any) -> dict[str, str]:
        pairs: list[tuple[str, str | None]] = []
        if isinstance(value, Mapping):
            pairs = [(str(k), None if v is None else _scalar(v)) for k, v in value.items()]
        else:
            for entry in _list(value):
                name, sep, text = _scalar(entry).partition("=")
                pairs.append((name, text if sep else None))
        environment: dict[str, str] = {}
        for name, given in pairs:
            if not name:
                raise ValueError("a variable has no name")
            # Without a value compose asks its shell; here the only "shell" is composition_variables.
            value_or_none = self.variables.get(name) if given is None else given
            if value_or_none is not None:
                environment[name] = value_or_none
        return environment

    def _depends_on(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, Mapping):
            return list(dict.fromkeys(_scalar(item) for item in _list(value)))
        for name, options in value.items():
            condition = options.get("condition") if isinstance(options, Mapping) else None
            if condition not in (None, "service_started"):
                self.warnings.append(
                    f"{where}: condition `{condition}` on `{name}` is not checked; it is only started first"
                )
        return [str(name) for name in value]


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a list, found {describe(value)}")
    return value


def _scalar(value: Any) -> str:
    """A YAML scalar as the text compose makes of it (`true`, not Python's `True`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"expected a single value, found {describe(value)}")


def _argv(value: Any) -> list[str] | None:
    """A command as a list of arguments; a string is split as a shell would, without expanding anything."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {describe(value)} into arguments: {exc}") from None
    return [_scalar(item) for item in _list(value)]


class Mount(NamedTuple):
    """A bind mount: `host` path, `container` path, and `mode` (`ro` or `rw`)."""

    host: str
    container: str
    mode: str


def parse_volume(text: str, volume_root: Path | str, *, volume_name: str | None = None) -> Mount:
    """A freestyle `volumes:` entry `SOURCE:TARGET[:ro|rw]` as a bind mount of the build volume.

    SOURCE is relative to the build volume, or an absolute path inside `/codefresh/volume` (also written
    `${{CF_VOLUME_PATH}}`); either maps into `volume_root`, the volume's folder on the host. The volume itself
    may be named by `volume_name` or `${{CF_VOLUME_NAME}}`. `..` is resolved without touching the disk and may not
    lead out of the volume; other named docker volumes are refused. `ValueError` says what is wrong."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"volume {text!r}: write SOURCE:TARGET or SOURCE:TARGET:MODE")
    source, target, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"volume {text!r}: the mode must be `ro` or `rw`, not {mode!r}")
    if not target.startswith("/"):
        raise ValueError(f"volume {text!r}: the target {target!r} must be an absolute path in the container")
    relative = _volume_relative(text, source, volume_name)
    host = Path(volume_root) if relative == "." else Path(volume_root) / relative
    return Mount(str(host), posixpath.normpath(target), mode)


def _volume_relative(text: str, source: str, volume_name: str | None) -> str:
    """SOURCE as a normalised path relative to the build volume (`.` for the volume itself)."""
    if source == volume_name or _CF_VOLUME_NAME.fullmatch(source):
        return "."
    if prefix := _CF_VOLUME_PATH.match(source):
        source = VOLUME_PATH + source[prefix.end() :]
    if source.startswith("/"):
        path = posixpath.normpath(source)
        if path != VOLUME_PATH and not path.startswith(VOLUME_PATH + "/"):
            raise ValueError(f"volume {text!r}: only paths inside the build volume ({VOLUME_PATH}) can be mounted")
        return posixpath.relpath(path, VOLUME_PATH)
    if "/" not in source and not source.startswith("."):
        raise ValueError(
            f"volume {text!r}: named docker volumes are not supported; write `./{source}` for a folder of the build "
            "volume"
        )
    path = posixpath.normpath(source)
    if path == ".." or path.startswith("../"):
        raise ValueError(f"volume {text!r}: {source!r} leads out of the build volume")
    return path
