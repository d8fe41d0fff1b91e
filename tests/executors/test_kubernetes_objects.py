"""Every object the Kubernetes executor creates is valid against the Kubernetes OpenAPI schema, strictly (an unknown
field fails), as built by the pure builders in executors/kubernetes/objects.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube.fixtures import need_kubernetes_packages

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _packages() -> None:
    need_kubernetes_packages()


def valid(obj: Any) -> dict[str, Any]:
    import kubernetes_validate

    body: dict[str, Any] = obj.to_dict()
    kubernetes_validate.validate(body, "1.37", strict=True)
    return body


def _spec(**more: Any) -> Any:
    from outpost.executors.kubernetes import objects

    given: dict[str, Any] = {
        "name": objects.dns_label("op", "Build_42", "1", "Unit Tests!"),
        "namespace": "builds",
        "build_id": "b-42",
        "step": "unit tests",
        "image": "registry.internal:5000/team/app:1.2",
        "command": ["/bin/sh", "-c", "true"],
        "claim": "outpost-work",
        "volume_path": "builds/b-42/volume",
        "volume_mount": "/codefresh/volume",
        "env_secret": "op-b-42-1-unit-tests",
    }
    return objects.StepPodSpec(**{**given, **more})


def test_a_step_pod_is_valid_never_restarts_and_gets_no_service_account_token() -> None:
    from outpost.executors.kubernetes import objects

    body = valid(objects.step_pod(_spec()))
    assert body["metadata"]["name"] == "op-build-42-1-unit-tests"
    assert body["spec"]["restartPolicy"] == "Never"
    assert body["spec"]["automountServiceAccountToken"] is False
    mount = body["spec"]["containers"][0]["volumeMounts"][0]
    assert mount == {"name": "build", "mountPath": "/codefresh/volume", "subPath": "builds/b-42/volume"}
    assert body["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "op-b-42-1-unit-tests"}}]
    assert "env" not in body["spec"]["containers"][0]  # values stay out of the pod spec


EVERY_PLACEMENT: dict[str, Any] = {
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ci"]}]}]
            }
        }
    },
}


def test_a_step_pod_with_every_option_is_valid() -> None:
    import json

    from outpost.executors.kubernetes import objects, placement

    where = placement.parse(json.dumps(EVERY_PLACEMENT))

    spec = _spec(
        workdir="/codefresh/volume/repo",
        tools_path="builds/b-42/scratch/bin",
        tools_mount="/codefresh/outpost/bin",
        node_name="node-a",
        node_selector={"disk": "ssd"},
        tolerations=where.tolerations,
        affinity=where.affinity,
        pull_secrets=["registry"],
        requests={"cpu": "250m", "memory": "128Mi"},
        limits={"memory": "64Mi", "cpu": "500m"},
        deadline_seconds=600,
    )
    body = valid(objects.step_pod(spec))
    assert body["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi"},
        "limits": {"memory": "64Mi", "cpu": "500m"},
    }
    assert body["spec"]["tolerations"] == EVERY_PLACEMENT["tolerations"]
    assert body["spec"]["affinity"] == EVERY_PLACEMENT["affinity"]
    assert body["spec"]["containers"][0]["volumeMounts"][1]["readOnly"] is True


def test_the_environment_secret_is_valid_and_refuses_names_a_secret_cannot_hold() -> None:
    from outpost.errors import ExecutorError
    from outpost.executors.kubernetes import objects

    body = valid(objects.env_secret("s", "builds", "b-42", "unit", {"MULTI": "a\nb", "EMPTY": "", "a.b-c": "x"}))
    assert body["stringData"]["MULTI"] == "a\nb"
    assert body["immutable"] is True
    with pytest.raises(ExecutorError, match="cannot pass: BAD NAME"):
        objects.env_secret("s", "builds", "b-42", "unit", {"BAD NAME": "x"})


def test_a_build_claim_and_the_runner_role_are_valid() -> None:
    from outpost.executors.kubernetes import objects

    claim = valid(objects.build_claim("vol", "builds", size="5Gi", storage_class="fast", labels={"a": "b"}))
    assert claim["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    role = valid(objects.runner_role("outpost-runner", "builds"))
    verbs = {r["resources"][0]: set(r["verbs"]) for r in role["rules"]}
    assert set(verbs) == {"pods", "secrets", "persistentvolumeclaims", "events"}
    assert all("*" not in v and "escalate" not in v for v in verbs.values())
    assert verbs["events"] == {"list"}


def test_the_strict_schema_check_catches_an_unknown_field() -> None:
    """The check the builder tests rely on is real: a misspelt field fails it."""
    import kubernetes_validate

    from outpost.executors.kubernetes import objects

    body = objects.step_pod(_spec()).to_dict()
    body["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        kubernetes_validate.validate(body, "1.37", strict=True)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [(("op", "B/42", "7", "Build & Push"), "op-b-42-7-build-push"), (("x" * 80,), "x" * 63), (("--",), "x")],
)
def test_names_are_dns_labels(parts: tuple[str, ...], expected: str) -> None:
    from outpost.executors.kubernetes import objects

    assert objects.dns_label(*parts) == expected


def test_a_pull_secret_is_a_valid_dockerconfigjson_secret() -> None:
    import base64
    import json

    from outpost.executors.kubernetes import objects

    body = valid(objects.pull_secret("p", "builds", "b-42", "unit", {"registry.internal:5000": ("ci", "s3cret")}))
    assert body["type"] == "kubernetes.io/dockerconfigjson"
    entry = json.loads(body["stringData"][".dockerconfigjson"])["auths"]["registry.internal:5000"]
    assert base64.b64decode(entry["auth"]) == b"ci:s3cret"


@pytest.mark.parametrize("seccomp", ["Unconfined", "Localhost:profiles/buildah-userns.json"])
def test_a_builder_pod_is_valid_unprivileged_and_in_a_user_namespace_of_its_own(seccomp: str) -> None:
    from outpost.executors.kubernetes import objects

    spec = _spec(security=objects.builder_security(seccomp), host_users=False, host_aliases={"db": "10.1.2.3"})
    body = valid(objects.step_pod(spec))
    security = body["spec"]["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert "privileged" not in security
    assert security["capabilities"] == {"drop": ["ALL"], "add": list(objects.BUILDER_CAPABILITIES)}
    assert security["seccompProfile"]["type"] == seccomp.split(":")[0]
    assert body["spec"]["hostUsers"] is False
    assert body["spec"]["hostAliases"] == [{"ip": "10.1.2.3", "hostnames": ["db"]}]


def _engine_spec(**more: Any) -> Any:
    from outpost.executors.kubernetes import objects

    given: dict[str, Any] = {
        "name": "outpost-engine-b-42",
        "namespace": "builds",
        "build_id": "b-42",
        "image": "registry.internal:5000/outpost/runner:0.1.0",
        "folder": "/var/lib/outpost/builds/b-42",
        "claim": "data-outpost-runner-0",
        "claim_mount": "/var/lib/outpost",
        "secret": "outpost-engine-b-42-task",
        "service_account": "outpost-engine",
        "deadline_seconds": 86700,
    }
    return objects.EnginePodSpec(**{**given, **more})


def test_an_engine_pod_is_valid_never_restarts_and_mounts_the_work_claim_where_the_runner_has_it() -> None:
    from outpost.executors.kubernetes import objects

    body = valid(objects.engine_pod(_engine_spec(node_name="node-a", run_as=(1000, 1000), runner="r123")))
    spec = body["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 86700
    assert spec["nodeName"] == "node-a"  # a ReadWriteOnce claim: on the runner's node
    assert spec["serviceAccountName"] == "outpost-engine"
    assert spec["automountServiceAccountToken"] is True  # it creates the step pods
    container = spec["containers"][0]
    assert container["command"][:3] == ["python3", "-m", "outpost.runner.enginepod"]
    assert {"name": "build", "mountPath": "/var/lib/outpost"} in container["volumeMounts"]  # whole, at the same path
    assert {"name": "task", "mountPath": "/etc/outpost/build", "readOnly": True} in container["volumeMounts"]
    assert "/var/lib/outpost/builds/b-42" in container["command"]
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert body["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "outpost",
        "outpost.io/engine": "b-42",
        "outpost.io/runner": "r123",
    }
    assert "outpost.io/build" not in body["metadata"]["labels"]  # the build's clean-up of step pods leaves it be
    names = {e["name"] for e in container["env"]}
    assert names == {"OUTPOST_ENGINE_POD", "PYTHONUNBUFFERED"}  # the task and its secrets are in the Secret only


def test_an_engine_pod_takes_its_placement() -> None:
    from outpost.executors.kubernetes import engines, objects

    where = engines.placement_of({"engine_pods": json.dumps(EVERY_PLACEMENT)})
    body = valid(
        objects.engine_pod(
            _engine_spec(
                node_selector=where.node_selector,
                tolerations=where.tolerations,
                affinity=where.affinity,
                requests=where.requests,
                limits=where.limits,
            )
        )
    )
    assert body["spec"]["tolerations"] == EVERY_PLACEMENT["tolerations"]
    assert body["spec"]["affinity"] == EVERY_PLACEMENT["affinity"]


def test_engine_pods_refuse_a_node_choice_when_pinned_and_name_their_option() -> None:
    from outpost.errors import ExecutorError
    from outpost.executors.kubernetes import engines

    with pytest.raises(ExecutorError, match="--engine-pods chooses nodes"):
        engines.placement_of({"engine_pods": '{"nodeSelector": {"disk": "ssd"}}', "node": "node-a"})
    with pytest.raises(ExecutorError, match=r"--engine-pods: unknown field tolerations\[0\].efect"):
        engines.placement_of({"engine_pods": '{"tolerations": [{"key": "a", "efect": "NoSchedule"}]}'})


def test_the_engine_secret_holds_the_task_and_is_immutable() -> None:
    from outpost.executors.kubernetes import objects

    files = {"task.json": '{"build_id": "b-42"}', "settings.json": "{}"}
    body = valid(objects.engine_secret("outpost-engine-b-42-task", "builds", "b-42", files, "r123"))
    assert body["stringData"] == files
    assert body["immutable"] is True
    assert body["metadata"]["labels"]["outpost.io/engine"] == "b-42"


def test_a_step_pod_made_by_an_engine_pod_is_its_dependent() -> None:
    from outpost.executors.kubernetes import objects

    body = valid(objects.step_pod(_spec(owner=("outpost-engine-b-42", "0b5c-uid"))))
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "outpost-engine-b-42", "uid": "0b5c-uid"}
    ]


def test_the_engine_role_is_valid_and_has_nothing_on_claims() -> None:
    from outpost.executors.kubernetes import objects

    body = valid(objects.engine_role("outpost-engine", "builds"))
    resources = {r["resources"][0]: set(r["verbs"]) for r in body["rules"]}
    assert resources == {
        "pods": {"create", "get", "list", "watch", "delete"},
        "secrets": {"create", "get", "list", "patch", "delete"},
        "events": {"list"},
    }
