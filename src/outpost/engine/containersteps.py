"""What `build`, `push` and `composition` steps, and the container side of freestyle steps, ask of a container
executor: the step's fields, with variables substituted, turned into jobs (pure; the engine runs them)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from outpost.containers import compose, images
from outpost.containers.auth import RegistryAuth
from outpost.errors import ExecutorError, PipelineError
from outpost.executors.base import (
    VOLUME_IN_STEP,
    CompositionJob,
    ImageBuildJob,
    Mount,
    PushJob,
    Readiness,
    ServiceSpec,
    StepJob,
)
from outpost.pipelines.spec import Step
from outpost.pipelines.variables import substitute

IMAGE_WORK_DIR = "IMAGE_WORK_DIR"  # `working_directory: IMAGE_WORK_DIR`: the image's own WORKDIR


def in_step(path: Path, volume: Path) -> str | None:
    """Where a container sees a host path of the build volume; None if the path is outside it."""
    try:
        relative = path.resolve().relative_to(volume.resolve())
    except ValueError:
        return None
    return str(PurePosixPath(VOLUME_IN_STEP) / relative) if str(relative) != "." else VOLUME_IN_STEP


def volume_mount(entry: str, volume: Path, volume_name: str | None = None) -> Mount:
    """A `volumes:` entry `src:dst[:ro|rw]`; src is in the build volume and may not leave it."""
    try:
        mount = compose.parse_volume(entry, volume, volume_name=volume_name)
    except ValueError as exc:
        raise ExecutorError(str(exc)) from None
    return Mount(Path(mount.host), mount.container, read_only=mount.mode == "ro")


def containerize(
    job: StepJob,
    step: Step,
    values: Mapping[str, str],
    *,
    volume: Path,
    auths: list[RegistryAuth],
    root_services: Mapping[str, Any],
) -> None:
    """Fills in what a freestyle step needs on a container executor."""
    raw = substitute(str(step.fields.get("working_directory") or ""), values).strip()
    job.workdir_in_step = None if raw == IMAGE_WORK_DIR else in_step(job.workdir, volume) or raw or None
    job.auths = auths
    for name in ("cmd", "entry_point"):
        value = step.fields.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            words = [substitute(str(v), values) for v in value]
        else:
            words = shlex.split(substitute(str(value), values))
        if name == "cmd":
            job.cmd = words
        else:
            job.entrypoint = words
    volume_name = values.get("CF_VOLUME_NAME")
    job.mounts = [
        volume_mount(substitute(str(v), values), volume, volume_name) for v in step.fields.get("volumes") or []
    ]
    services = step.fields.get("services")
    if services:
        job.services, job.readiness = step_services(services, values, root_services)


def step_services(
    services: Any, values: Mapping[str, str], root_services: Mapping[str, Any]
) -> tuple[list[ServiceSpec], Readiness | None]:
    """A freestyle step's `services`: an inline `{composition, readiness}`, or names of root `services`."""
    specs: list[dict[str, Any]] = []
    if isinstance(services, dict):
        specs.append(services)
    else:
        for name in services:
            root = root_services if root_services.get("name") == name else None
            if root is None:
                raise ExecutorError(f"service {name!r} is not defined in the pipeline's `services`")
            specs.append(dict(root))
    found: list[ServiceSpec] = []
    readiness: Readiness | None = None
    for spec in specs:
        composition = compose.load_composition(spec.get("composition") or {}, variables=dict(values))
        found += [_service(s, volume=None) for s in composition.order()]
        if isinstance(spec.get("readiness"), dict):
            readiness = _readiness(spec["readiness"], values)
    return found, readiness


def _readiness(spec: Mapping[str, Any], values: Mapping[str, str]) -> Readiness:
    commands = [substitute(str(c), values) for c in spec.get("commands") or []]
    if not spec.get("image") or not commands:
        raise ExecutorError("a service readiness check needs an `image` and `commands`")
    return Readiness(
        image=substitute(str(spec["image"]), values),
        script="set -e\n" + "\n".join(commands) + "\n",
        timeout=float(spec.get("timeoutSeconds", 10)),
        period=float(spec.get("periodSeconds", 10)),
        success_threshold=int(spec.get("successThreshold", 1)),
        failure_threshold=int(spec.get("failureThreshold", 3)),
        initial_delay=float(spec.get("initialDelaySeconds", 0)),
    )


def _service(service: compose.Service, *, volume: Path | None, volume_name: str | None = None) -> ServiceSpec:
    """A compose service as the executor runs it; its `volumes` only from the build volume (`ports` are not
    published: the build's containers reach it by name on the build's network)."""
    if service.volumes and volume is None:
        raise ExecutorError(f"service {service.name}: `volumes` are not supported here")
    mounts = [volume_mount(v, volume, volume_name) for v in service.volumes] if volume is not None else []
    return ServiceSpec(
        name=service.name,
        image=service.image,
        command=service.command,
        entrypoint=service.entrypoint,
        environment=dict(service.environment),
        working_dir=service.working_dir,
        mounts=mounts,
    )


def composition_job(
    step: Step, values: Mapping[str, str], *, workdir: Path, volume: Path, auths: list[RegistryAuth]
) -> CompositionJob:
    """A composition step: its services (file or inline; `${VAR}` from `composition_variables` only) and its
    candidates laid over them. Problems in the composition end the step with every message."""
    fields = step.fields
    variables = [substitute(str(v), values) for v in fields.get("composition_variables") or []]
    raw = fields.get("composition")
    source: Mapping[str, Any] | str = (
        _substituted(raw, values) if isinstance(raw, dict) else substitute(str(raw), values)
    )
    candidates = _substituted(fields.get("composition_candidates") or {}, values)
    try:
        loaded = compose.load_composition(source, variables=variables, base=workdir)
        merged = compose.merge_candidates(loaded, candidates, variables=variables)
        ordered = merged.order()
    except PipelineError as exc:
        raise ExecutorError(str(exc)) from None
    name = values.get("CF_VOLUME_NAME")
    chosen = set(merged.candidates)
    return CompositionJob(
        step=step.name,
        services=[_service(s, volume=volume, volume_name=name) for s in ordered if s.name not in chosen],
        candidates=[_service(s, volume=volume, volume_name=name) for s in ordered if s.name in chosen],
        auths=auths,
        warnings=list(merged.warnings),
    )


def _substituted(value: Any, values: Mapping[str, str]) -> Any:
    """`${{VAR}}` replaced in every string of a YAML value (compose's own `${VAR}` is left for compose)."""
    if isinstance(value, str):
        return substitute(value, values)
    if isinstance(value, dict):
        return {k: _substituted(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v, values) for v in value]
    return value


# --- build and push ---------------------------------------------------------------------------------------


# Build fields validated but not used by Outpost's builders (BuildKit/buildx features, caches, signing, ECR).
UNUSED_BUILD_FIELDS = (
    "squash", "cache_from", "cache_to", "buildkit", "buildx", "platform", "progress", "ssh", "secrets",
    "metadata", "annotations", "cosign", "no_cf_cache", "provider", "accessKeyId", "secretAccessKey", "region",
    "role_arn", "aws_session_name", "aws_duration_seconds",
)  # fmt: skip


@dataclass
class BuildPlan:
    job: ImageBuildJob
    image_name: str
    tags: list[str]
    push: bool  # to the default registry (or the step's `registry`), unless disable_push
    ignored: list[str]  # fields present that the builders do not use


def build_plan(step: Step, values: Mapping[str, str], *, context: Path, auths: list[RegistryAuth]) -> BuildPlan:
    fields = step.fields

    def text(name: str) -> str | None:
        value = fields.get(name)
        return substitute(str(value), values).strip() or None if value is not None else None

    image_name = text("image_name")
    if not image_name:
        raise ExecutorError("a build step needs an `image_name`")
    policy: images.TagPolicy = "original" if text("tag_policy") == "original" else "lowercase"
    if policy == "lowercase":
        image_name = image_name.lower()
    wanted = [substitute(str(t), values) for t in fields.get("tags") or []]
    if not wanted:
        wanted = [text("tag") or values.get("CF_BRANCH_TAG_NORMALIZED") or "latest"]
    try:
        tags = list(dict.fromkeys(images.normalize_tag(tag.strip(), policy) for tag in wanted))
    except ValueError as exc:
        raise ExecutorError(f"not a usable image tag: {exc}") from None
    dockerfile = fields.get("dockerfile")
    content = None
    path = "Dockerfile"
    if isinstance(dockerfile, dict):
        content = substitute(str(dockerfile.get("content") or ""), values)
    elif dockerfile:
        path = substitute(str(dockerfile), values).strip()
    build_args: dict[str, str] = {}
    for entry in fields.get("build_arguments") or []:
        key, _, value = substitute(str(entry), values).partition("=")
        build_args[key.strip()] = value
    disabled = str(substitute(str(fields.get("disable_push", False)), values)).strip().lower() == "true"
    job = ImageBuildJob(
        step=step.name,
        context=context,
        tags=[f"{image_name}:{tag}" for tag in tags],
        dockerfile=path,
        dockerfile_content=content,
        build_args=build_args,
        target=text("target"),
        no_cache=str(fields.get("no_cache", False)).lower() == "true",
        auths=auths,
    )
    ignored = [name for name in UNUSED_BUILD_FIELDS if name in fields]
    return BuildPlan(job=job, image_name=image_name, tags=tags, push=not disabled, ignored=ignored)


def push_job(
    step: Step, values: Mapping[str, str], *, registry: RegistryAuth, built: Mapping[str, str]
) -> tuple[PushJob, str]:
    """A push step's job and the image name it pushes. `built` maps a build step's image to its name."""
    fields = step.fields
    candidate = substitute(str(fields.get("candidate") or ""), values).strip()
    if not candidate:
        raise ExecutorError("a push step needs a `candidate`")
    name = substitute(str(fields.get("image_name") or ""), values).strip() or built.get(candidate) or candidate
    tags = [substitute(str(t), values).strip() for t in fields.get("tags") or []]
    if not tags:
        tags = [substitute(str(fields.get("tag") or "latest"), values).strip() or "latest"]
    try:
        image = images.ImageRef.parse(name)
        if image.domain is not None and images.canonical_host(image.domain) == images.canonical_host(registry.domain):
            image = image.with_domain(None)  # already named after this registry
        name = image.repository
        targets = images.push_targets(name, tags, registry)
    except ValueError as exc:
        raise ExecutorError(f"cannot push {candidate!r}: {exc}") from None
    return PushJob(step=step.name, image=candidate, targets=targets, auth=registry), name
