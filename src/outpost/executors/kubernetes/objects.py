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
    HostAlias,
    LocalObjectReference,
    PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource,
    PodSpec,
    SeccompProfile,
    SecretEnvSource,
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
BUILD_VOLUME = "build"
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
    inside it (a subPath)."""

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


def step_pod(spec: StepPodSpec) -> Pod:
    """One attempt of one step: never restarted, no service account token, pinned where the spec says."""
    mounts = [VolumeMount(name=BUILD_VOLUME, mountPath=spec.volume_mount, subPath=spec.volume_path)]
    if spec.tools_path and spec.tools_mount:
        mounts.append(
            VolumeMount(name=TOOLS_VOLUME, mountPath=spec.tools_mount, subPath=spec.tools_path, readOnly=True)
        )
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
    return Pod(
        metadata=ObjectMeta(
            name=spec.name, namespace=spec.namespace, labels=step_labels(spec.build_id, spec.step, spec.runner)
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
            + ([Volume(name=TOOLS_VOLUME, persistentVolumeClaim=claim)] if spec.tools_path else []),
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


def owned_by(pod: Pod) -> dict[str, object]:
    """A merge patch that makes an object a dependent of `pod`: it goes when the pod goes."""
    assert pod.metadata is not None
    assert pod.metadata.name
    assert pod.metadata.uid
    owner = OwnerReference(apiVersion="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid)
    return {"metadata": {"ownerReferences": [owner.to_dict()]}}


def build_claim(
    name: str, namespace: str, *, size: str, storage_class: str | None = None, labels: Mapping[str, str] | None = None
) -> PersistentVolumeClaim:
    """A build volume (the next slice reuses one per pipeline)."""
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
    return Role(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=dict(MANAGED_BY)),
        rules=[PolicyRule(apiGroups=[group], resources=[res], verbs=list(verbs)) for group, res, verbs in RUNNER_RULES],
    )
