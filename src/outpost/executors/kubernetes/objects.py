"""Pure builders of the Kubernetes objects the executor creates: no I/O, one function per object.

Every object is a lightkube model; the tests validate each one against the Kubernetes OpenAPI schema (strict: no
unknown field), and the test cluster rejects what the schema rejects.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lightkube.models.core_v1 import (
    Affinity,
    Capabilities,
    Container,
    EnvFromSource,
    EnvVar,
    HostAlias,
    LocalObjectReference,
    PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource,
    PodSpec,
    SeccompProfile,
    SecretEnvSource,
    SecretVolumeSource,
    SecurityContext,
    Toleration,
    Volume,
    VolumeMount,
    VolumeResourceRequirements,
)
from lightkube.models.core_v1 import ResourceRequirements as Resources
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.models.rbac_v1 import PolicyRule
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod, Secret
from lightkube.resources.rbac_authorization_v1 import Role

from outpost.errors import ExecutorError

MANAGED_BY = {"app.kubernetes.io/managed-by": "outpost"}
BUILD_LABEL = "outpost.io/build"
STEP_LABEL = "outpost.io/step"
RUNNER_LABEL = "outpost.io/runner"  # which runner made it (see `runner_mark`): a restarted one removes what is left
# An engine pod and its Secret carry this, not BUILD_LABEL: what removes a build's step pods (the engine's own clean-up
# when the build ends) must not remove the engine pod doing it.
ENGINE_LABEL = "outpost.io/engine"
ENGINE_CONTAINER = "engine"
ENGINE_SECRET_MOUNT = "/etc/outpost/build"  # task.json and settings.json, read-only
BUILD_VOLUME = "build"
KEPT_VOLUME = "volume"  # an engine pod's build volume claim
TOOLS_VOLUME = "tools"
STEP_CONTAINER = "step"
# A Secret key (and so an environment variable passed through one) may only hold these characters.
_ENV_NAME = re.compile(r"^[-._a-zA-Z0-9]+$")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both ends) that names `text`."""
    value = _LABEL_VALUE.sub("-", text)[:63].strip("-_.")
    return value or "none"


def dns_label(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label made of `parts`: lowercase alphanumerics and '-', at most `limit` characters."""
    text = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p)
    return re.sub(r"-+", "-", text)[:limit].strip("-") or "x"


@dataclass
class StepPodSpec:
    """What a step pod needs; `claim` is the PersistentVolumeClaim holding the build volume, at `volume_path`
    inside it (a subPath; empty: the claim is the build volume, whole)."""

    name: str
    namespace: str
    build_id: str
    step: str
    image: str
    command: list[str]
    claim: str
    volume_path: str
    volume_mount: str
    env_secret: str | None = None
    workdir: str | None = None
    tools_path: str | None = None  # the runner's tools (cf_export) in the same claim, mounted read-only
    tools_mount: str | None = None
    tools_claim: str | None = None  # the claim holding `tools_path` when it is not `claim` (the work claim)
    step_path: str | None = None  # the pod's own folder (script, output, exit code) in the work claim, read-write
    step_mount: str | None = None
    node_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Toleration] = ()
    affinity: Affinity | None = None
    pull_secrets: Sequence[str] = ()
    requests: Mapping[str, str] = field(default_factory=dict)  # resources: cpu, memory, ephemeral-storage...
    limits: Mapping[str, str] = field(default_factory=dict)
    grace_seconds: int = 3
    deadline_seconds: int | None = None
    security: SecurityContext | None = None  # default: no privilege escalation
    host_users: bool | None = None  # False: a user namespace of its own (root in the pod is nobody on the node)
    host_aliases: Mapping[str, str] = field(default_factory=dict)  # name -> IP, for a composition's services
    runner: str | None = None  # the runner's mark (RUNNER_LABEL)
    owner: tuple[str, str] | None = None  # (name, uid) of the engine pod that made it: it goes with that pod


def step_pod(spec: StepPodSpec) -> Pod:
    """One attempt of one step: never restarted, no service account token, pinned where the spec says."""
    mounts = [VolumeMount(name=BUILD_VOLUME, mountPath=spec.volume_mount, subPath=spec.volume_path or None)]
    if spec.tools_path and spec.tools_mount:
        mounts.append(
            VolumeMount(name=TOOLS_VOLUME, mountPath=spec.tools_mount, subPath=spec.tools_path, readOnly=True)
        )
    # The work claim: `claim` itself unless `tools_claim` names it (the build volume is then a claim of its own).
    work = TOOLS_VOLUME if spec.tools_claim else BUILD_VOLUME
    if spec.step_path and spec.step_mount:
        mounts.append(VolumeMount(name=work, mountPath=spec.step_mount, subPath=spec.step_path))
    container = Container(
        name=STEP_CONTAINER,
        image=spec.image,
        imagePullPolicy="IfNotPresent",
        command=spec.command,
        workingDir=spec.workdir,
        envFrom=[EnvFromSource(secretRef=SecretEnvSource(name=spec.env_secret))] if spec.env_secret else None,
        volumeMounts=mounts,
        resources=Resources(requests=dict(spec.requests) or None, limits=dict(spec.limits) or None)
        if spec.requests or spec.limits
        else None,
        securityContext=spec.security or SecurityContext(allowPrivilegeEscalation=False),
    )
    claim = PersistentVolumeClaimVolumeSource(claimName=spec.claim)
    tools = PersistentVolumeClaimVolumeSource(claimName=spec.tools_claim) if spec.tools_claim else claim
    return Pod(
        metadata=ObjectMeta(
            name=spec.name,
            namespace=spec.namespace,
            labels=step_labels(spec.build_id, spec.step, spec.runner),
            ownerReferences=[owner_reference(*spec.owner)] if spec.owner else None,
        ),
        spec=PodSpec(
            containers=[container],
            restartPolicy="Never",
            automountServiceAccountToken=False,
            enableServiceLinks=False,
            terminationGracePeriodSeconds=spec.grace_seconds,
            activeDeadlineSeconds=spec.deadline_seconds,
            nodeName=spec.node_name,
            nodeSelector=dict(spec.node_selector) or None,
            tolerations=list(spec.tolerations) or None,
            affinity=spec.affinity,
            imagePullSecrets=[LocalObjectReference(name=s) for s in spec.pull_secrets] or None,
            hostUsers=spec.host_users,
            hostAliases=[HostAlias(ip=ip, hostnames=[name]) for name, ip in spec.host_aliases.items()] or None,
            volumes=[Volume(name=BUILD_VOLUME, persistentVolumeClaim=claim)]
            + ([Volume(name=TOOLS_VOLUME, persistentVolumeClaim=tools)] if spec.tools_path or spec.tools_claim else []),
        ),
    )


# What buildah needs to build as root in a pod without privileges: chroot isolation and the capabilities a
# container runtime gives by default anyway (checked on the tests' engine: fewer fail a RUN instruction), and a user
# namespace of its own, which the default seccomp profiles refuse (unshare(CLONE_NEWUSER)): so the profile is
# Unconfined, or a Localhost profile that allows it.
BUILDER_CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETFCAP",
    "SETGID",
    "SETUID",
    "SYS_CHROOT",
)


def builder_security(seccomp: str) -> SecurityContext:
    """A builder pod's container: root (in the pod's own user namespace on a cluster that has them), no privilege
    escalation, only BUILDER_CAPABILITIES, and `seccomp` ("Unconfined" or "Localhost:<profile>")."""
    kind, _, profile = seccomp.partition(":")
    return SecurityContext(
        runAsUser=0,
        runAsNonRoot=False,
        allowPrivilegeEscalation=False,
        capabilities=Capabilities(drop=["ALL"], add=list(BUILDER_CAPABILITIES)),
        seccompProfile=SeccompProfile(type=kind, localhostProfile=profile or None),
    )


def dind_security() -> SecurityContext:
    """The Docker-in-Docker pod's container (the `--docker-in-docker` opt-in only): privileged, as root, so that
    dockerd can mount, make cgroups and run containers. Pod Security admits it only at level `privileged`."""
    return SecurityContext(privileged=True, runAsUser=0, runAsNonRoot=False)


def step_labels(build_id: str, step: str, runner: str | None = None) -> dict[str, str]:
    labels = {**MANAGED_BY, BUILD_LABEL: label_value(build_id), STEP_LABEL: label_value(step)}
    return {**labels, RUNNER_LABEL: runner} if runner else labels


def runner_mark(claim: str, folder: str) -> str:
    """A label value naming one runner: its work claim and data folder (two runners may share a claim, never a
    folder). Known before the runner registers, so its start can find what an earlier run of it left."""
    return "r" + hashlib.sha256(f"{claim}\0{folder}".encode()).hexdigest()[:24]


def build_selector(build_id: str) -> dict[str, str]:
    """The label selector of everything one build created."""
    return {BUILD_LABEL: label_value(build_id)}


def env_secret(
    name: str, namespace: str, build_id: str, step: str, env: Mapping[str, str], runner: str | None = None
) -> Secret:
    """A step's environment, kept out of the pod spec (anyone who may read pods would read the values)."""
    bad = sorted(k for k in env if not _ENV_NAME.match(k))
    if bad:
        raise ExecutorError(f"environment variable names the Kubernetes executor cannot pass: {', '.join(bad)}")
    return Secret(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=step_labels(build_id, step, runner)),
        type="Opaque",
        stringData=dict(env),
        immutable=True,
    )


def pull_secret(
    name: str,
    namespace: str,
    build_id: str,
    step: str,
    logins: Mapping[str, tuple[str, str]],
    runner: str | None = None,
) -> Secret:
    """The credentials the kubelet pulls the step's image with (`logins`: registry domain -> user, password)."""
    auths = {
        domain: {
            "username": user,
            "password": password,
            "auth": base64.b64encode(f"{user}:{password}".encode()).decode(),
        }
        for domain, (user, password) in logins.items()
    }
    return Secret(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=step_labels(build_id, step, runner)),
        type="kubernetes.io/dockerconfigjson",
        stringData={".dockerconfigjson": json.dumps({"auths": auths})},
        immutable=True,
    )


def owner_reference(name: str, uid: str) -> OwnerReference:
    return OwnerReference(apiVersion="v1", kind="Pod", name=name, uid=uid)


def owned_by(pod: Pod) -> dict[str, object]:
    """A merge patch that makes an object a dependent of `pod`: it goes when the pod goes."""
    assert pod.metadata is not None
    assert pod.metadata.name
    assert pod.metadata.uid
    return {"metadata": {"ownerReferences": [owner_reference(pod.metadata.name, pod.metadata.uid).to_dict()]}}


def build_of(labels: Mapping[str, str]) -> str | None:
    """The build (its label value) a step pod, an engine pod or one of their Secrets belongs to."""
    return labels.get(BUILD_LABEL) or labels.get(ENGINE_LABEL)


def engine_labels(build_id: str, runner: str | None) -> dict[str, str]:
    labels = {**MANAGED_BY, ENGINE_LABEL: label_value(build_id)}
    return {**labels, RUNNER_LABEL: runner} if runner else labels


def engine_selector(build_id: str) -> dict[str, str]:
    return {ENGINE_LABEL: label_value(build_id)}


@dataclass
class EnginePodSpec:
    """The engine pod of one build: it runs the build's engine (`python -m outpost.runner.enginepod`) with the work
    claim mounted whole at `claim_mount`, the path where the runner has it, so every path in the build folder is the
    same in both."""

    name: str
    namespace: str
    build_id: str
    image: str
    folder: str  # the build folder, inside `claim_mount`
    claim: str
    claim_mount: str
    secret: str  # the Secret holding task.json and settings.json
    service_account: str
    deadline_seconds: int
    node_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Toleration] = ()
    affinity: Affinity | None = None
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    pull_secrets: Sequence[str] = ()
    run_as: tuple[int, int] | None = None  # (uid, gid): the runner's own, so files on the claim have one owner
    runner: str | None = None
    grace_seconds: int = 10
    # The build volume's own claim (`--volume-reuse pipeline|branch`), mounted at `volume_path`: the build folder's
    # `volume`, where the engine would otherwise have its volume, so no path changes.
    volume_claim: str | None = None
    volume_path: str | None = None


def engine_pod(spec: EnginePodSpec) -> Pod:
    """A bare pod, never restarted (what a Job with `backoffLimit: 0` would make; a Job would add a controller
    between the runner and the pod and nothing the runner needs). Its service account token is mounted: the engine
    creates the step pods itself."""
    files = f"{ENGINE_SECRET_MOUNT}/task.json", f"{ENGINE_SECRET_MOUNT}/settings.json"
    command = ["python3", "-m", "outpost.runner.enginepod", "--folder", spec.folder, "--task", files[0],
               "--settings", files[1]]  # fmt: skip
    uid, gid = spec.run_as if spec.run_as is not None else (None, None)
    container = Container(
        name=ENGINE_CONTAINER,
        image=spec.image,
        imagePullPolicy="IfNotPresent",
        command=command,
        # Its own name, for the ownerReferences of the step pods it creates (the uid it reads from the API).
        env=[EnvVar(name="OUTPOST_ENGINE_POD", value=spec.name), EnvVar(name="PYTHONUNBUFFERED", value="1")],
        volumeMounts=[
            VolumeMount(name=BUILD_VOLUME, mountPath=spec.claim_mount),
            VolumeMount(name="task", mountPath=ENGINE_SECRET_MOUNT, readOnly=True),
        ]
        + (
            [VolumeMount(name=KEPT_VOLUME, mountPath=spec.volume_path)]
            if spec.volume_claim and spec.volume_path
            else []
        ),
        resources=Resources(requests=dict(spec.requests) or None, limits=dict(spec.limits) or None)
        if spec.requests or spec.limits
        else None,
        securityContext=SecurityContext(
            allowPrivilegeEscalation=False,
            capabilities=Capabilities(drop=["ALL"]),
            runAsUser=uid,
            runAsGroup=gid,
            runAsNonRoot=True if uid else None,
            seccompProfile=SeccompProfile(type="RuntimeDefault"),
        ),
    )
    return Pod(
        metadata=ObjectMeta(name=spec.name, namespace=spec.namespace, labels=engine_labels(spec.build_id, spec.runner)),
        spec=PodSpec(
            containers=[container],
            restartPolicy="Never",
            serviceAccountName=spec.service_account,
            automountServiceAccountToken=True,
            enableServiceLinks=False,
            terminationGracePeriodSeconds=spec.grace_seconds,
            activeDeadlineSeconds=spec.deadline_seconds,
            nodeName=spec.node_name,
            nodeSelector=dict(spec.node_selector) or None,
            tolerations=list(spec.tolerations) or None,
            affinity=spec.affinity,
            imagePullSecrets=[LocalObjectReference(name=s) for s in spec.pull_secrets] or None,
            volumes=[
                Volume(
                    name=BUILD_VOLUME, persistentVolumeClaim=PersistentVolumeClaimVolumeSource(claimName=spec.claim)
                ),
                Volume(name="task", secret=SecretVolumeSource(secretName=spec.secret, defaultMode=0o400)),
            ]
            + (
                [Volume(name=KEPT_VOLUME, persistentVolumeClaim=PersistentVolumeClaimVolumeSource(claimName=claim))]
                if (claim := spec.volume_claim) and spec.volume_path
                else []
            ),
        ),
    )


def engine_secret(name: str, namespace: str, build_id: str, files: Mapping[str, str], runner: str | None) -> Secret:
    """What the engine pod reads at start: the build's task (its job token, secrets) and its settings."""
    return Secret(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=engine_labels(build_id, runner)),
        type="Opaque",
        stringData=dict(files),
        immutable=True,
    )


def build_claim(
    name: str, namespace: str, *, size: str, storage_class: str | None = None, labels: Mapping[str, str] | None = None
) -> PersistentVolumeClaim:
    """A build volume of its own (`claims.py`: a pipeline's, kept between its builds, or one build's)."""
    return PersistentVolumeClaim(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={**MANAGED_BY, **(labels or {})}),
        spec=PersistentVolumeClaimSpec(
            accessModes=["ReadWriteOnce"],
            resources=VolumeResourceRequirements(requests={"storage": size}),
            storageClassName=storage_class,
        ),
    )


# What the runner's service account may do in the build namespace, and nothing more (the test cluster enforces
# exactly these rules on the executor). Listing secrets finds a crashed build's step environments whose pod was never
# created; the build namespace holds nothing else, so it reveals nothing the runner did not write.
RUNNER_RULES = (
    ("", "pods", ("create", "get", "list", "watch", "delete")),
    ("", "secrets", ("create", "get", "list", "patch", "delete")),
    ("", "persistentvolumeclaims", ("create", "get", "list", "update", "delete")),
    ("", "events", ("list",)),
)


def runner_role(name: str, namespace: str) -> Role:
    """The least-privilege Role of the runner in its build namespace (the chart renders the same rules)."""
    return _role(name, namespace, RUNNER_RULES)


# What an engine pod's service account may do: create, follow and remove its build's step pods and their Secrets,
# and read their events for the step log. Nothing on claims (the work claim is mounted, never read through the API).
ENGINE_RULES = (
    ("", "pods", ("create", "get", "list", "watch", "delete")),
    ("", "secrets", ("create", "get", "list", "patch", "delete")),
    ("", "events", ("list",)),
)


def engine_role(name: str, namespace: str) -> Role:
    """The least-privilege Role of engine pods in the build namespace (the chart renders the same rules)."""
    return _role(name, namespace, ENGINE_RULES)


def _role(name: str, namespace: str, rules: Sequence[tuple[str, str, Sequence[str]]]) -> Role:
    return Role(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=dict(MANAGED_BY)),
        rules=[PolicyRule(apiGroups=[group], resources=[res], verbs=list(verbs)) for group, res, verbs in rules],
    )
