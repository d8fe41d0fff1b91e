"""The runner's Helm chart (deploy/helm/outpost-runner), rendered by Helm's own engine (helm-python-sdk bundles
Helm 4 as a library; no `helm` binary): every object valid against the Kubernetes schema, strictly; its
values.schema.json refuses bad values; its Role is exactly `objects.runner_role` and is enough for the executor to
run a step on the test cluster; `outpost runtime create --kubernetes` prints an install command the chart accepts."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import containers
from tests.components import need
from tests.e2e.processes import ControlPlane, Process, outpost_env
from tests.kube import fixtures

dockerd, busybox_image = containers.dockerd, containers.busybox_image
kube_cluster, engine_image = fixtures.kube_cluster, fixtures.engine_image

pytestmark = pytest.mark.timeout(120)
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "outpost-runner"
REQUIRED = {"controlPlane": {"url": "https://ci.example"}, "installToken": "opi_install"}
PRIVILEGED = {"namespace": {"podSecurity": {"enforce": "privileged"}}}
EVERYTHING: dict[str, Any] = {
    "controlPlane": {"url": "https://ci.example:8443/outpost"},
    "existingSecret": "runner-token",
    "image": {"repository": "registry.corp:5000/outpost", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "corp-registry"}],
    "runner": {
        "name": "corp-k8s-1",
        "concurrency": 4,
        "volumeReuse": "none",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "ci", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ci"]}]}]
                }
            }
        },
        "podAnnotations": {"team": "platform"},
    },
    "stepPods": {
        "nodeSelector": {"pool": "builds"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "outpost"}},
                        },
                    }
                ]
            }
        },
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
    },
    "builder": {
        "image": "registry.corp:5000/tools/buildah:1.39",
        "scratchRegistry": "registry.corp:5000/outpost-scratch",
        "seccompProfile": "Localhost:profiles/buildah-userns.json",
    },
    "data": {"size": "100Gi", "storageClassName": "fast-rwx", "accessMode": "ReadWriteMany"},
    "namespace": {"create": False},
    "proxy": {"https": "http://proxy.corp:3128", "noProxy": "10.0.0.0/8,.corp"},
    "caBundle": {"configMap": "corp-ca", "key": "ca.pem"},
    "networkPolicy": {
        "enabled": True,
        "controlPlaneCIDRs": ["203.0.113.10/32"],
        "controlPlanePort": 8443,
        "apiServerCIDRs": ["192.0.2.20/32", "192.0.2.21/32"],
        "apiServerPort": 6443,
        "egressTo": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 5000}]}],
    },
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    "timeouts": {"pull": 12.5, "pending": 300, "nodeLost": 45},
    "helmTest": {"enabled": True, "pipeline": "smoke", "tokenSecret": "outpost-api-token"},
}


@pytest.fixture(autouse=True)
def _packages() -> None:
    need(
        importlib.util.find_spec("helm_python") is not None,
        "helm-python-sdk is not installed (pip install -e '.[dev]')",
    )
    fixtures.need_kubernetes_packages()


def render(values: dict[str, Any], namespace: str = "default") -> list[dict[str, Any]]:
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(values, name="outpost-runner", namespace=namespace, is_install=True)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def valid(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    import kubernetes_validate

    for body in objects:
        kubernetes_validate.validate(body, "1.37", strict=True)
    # The engine pods' service account, Role and binding are "<Kind>/engine".
    by_kind = {_key(body): body for body in objects}
    assert len(by_kind) == len(objects), "one object of each kind"
    return by_kind


def _key(body: dict[str, Any]) -> str:
    engine = body["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "engine"
    return f"{body['kind']}/engine" if engine else str(body["kind"])


def runner_container(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    return container


def arg(container: dict[str, Any], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")), None)


def test_the_default_chart_is_valid_and_runs_the_runner_in_a_namespace_with_pod_security_labels() -> None:
    kinds = valid(render(REQUIRED))
    assert set(kinds) == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap", "StatefulSet",
                          "ServiceAccount/engine", "Role/engine", "RoleBinding/engine"}  # fmt: skip
    labels = kinds["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert {body["metadata"].get("namespace") for kind, body in kinds.items() if kind != "Namespace"} == {"outpost"}
    assert kinds["Secret"]["stringData"] == {"token": "opi_install"}
    assert kinds["ConfigMap"]["data"]["OUTPOST_URL"] == "https://ci.example"
    assert kinds["ConfigMap"]["data"]["OUTPOST_NAMESPACE"] == "outpost"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["stepPods"]
    where = step_pod_settings(kinds)
    assert (where.requests, where.limits) == (defaults["resources"]["requests"], defaults["resources"]["limits"])
    assert not where.chooses_nodes  # ReadWriteOnce: the runner's node


def step_pod_settings(kinds: dict[str, dict[str, Any]]) -> Any:
    """What the runner makes of the chart's stepPods (it reads OUTPOST_STEP_PODS from the ConfigMap)."""
    from outpost.executors.kubernetes import placement

    return placement.parse(kinds["ConfigMap"]["data"]["OUTPOST_STEP_PODS"])


def test_helm_lint_strict_finds_nothing_to_fix() -> None:
    import helm_python

    report = helm_python.lint(CHART, REQUIRED, strict=True, namespace="outpost")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # warnings included (only "icon" is info)


def test_a_restarted_runner_pod_gets_back_the_claim_its_step_pods_mount() -> None:
    kinds = valid(render(REQUIRED))
    statefulset = kinds["StatefulSet"]
    (template,) = statefulset["spec"]["volumeClaimTemplates"]
    container = runner_container(kinds)
    # The StatefulSet names a pod's claim <template>-<pod>: the runner tells step pods to mount that one.
    assert arg(container, "work-claim") == f"{template['metadata']['name']}-$(POD_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mount = next(m for m in container["volumeMounts"] if m["name"] == template["metadata"]["name"])
    assert arg(container, "data-dir") == mount["mountPath"] == kinds["ConfigMap"]["data"]["OUTPOST_WORK_CLAIM_PATH"]
    # ReadWriteOnce: step pods must run on the runner's node.
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert arg(container, "node-name") == "$(NODE_NAME)"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["OUTPOST_RUNNER_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "outpost-runner-token", "key": "token"}
    assert container["args"][:3] == ["runner", "start", "--executor=kubernetes"]


def test_the_chart_with_every_option_on_is_valid_and_uses_each() -> None:
    kinds = valid(render(EVERYTHING, namespace="ci"))
    assert "Namespace" not in kinds  # the release's namespace
    assert "Secret" not in kinds  # the operator's
    assert {body["metadata"]["namespace"] for body in kinds.values()} == {"ci"}
    pod = kinds["StatefulSet"]["spec"]["template"]["spec"]
    container = runner_container(kinds)
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == EVERYTHING["runner"]["tolerations"]
    assert pod["affinity"] == EVERYTHING["runner"]["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "corp-registry"}]
    assert container["image"] == "registry.corp:5000/outpost:1.2.3"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert arg(container, "node-name") is None  # ReadWriteMany: step pods go wherever the scheduler puts them
    assert arg(container, "concurrency") == "4"
    assert arg(container, "volume-reuse") == "none"
    env = {e["name"]: e for e in container["env"]}
    assert env["OUTPOST_RUNNER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "runner-token"
    config = kinds["ConfigMap"]["data"]
    assert config["HTTPS_PROXY"] == "http://proxy.corp:3128"
    assert config["NO_PROXY"] == "10.0.0.0/8,.corp"
    assert config["SSL_CERT_FILE"] == "/etc/outpost/ca/ca.pem"
    assert config["OUTPOST_BUILDER_IMAGE"] == "registry.corp:5000/tools/buildah:1.39"
    assert config["OUTPOST_SCRATCH_REGISTRY"] == "registry.corp:5000/outpost-scratch"
    assert config["OUTPOST_BUILDER_SECCOMP"] == "Localhost:profiles/buildah-userns.json"
    where = step_pod_settings(kinds)
    assert where.node_selector == {"pool": "builds"}
    assert [t.to_dict() for t in where.tolerations] == EVERYTHING["stepPods"]["tolerations"]
    assert where.affinity is not None
    assert where.affinity.to_dict() == EVERYTHING["stepPods"]["affinity"]
    assert where.limits == {"cpu": "4", "memory": "8Gi"}
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy  # nothing comes in
    assert {"ipBlock": {"cidr": "203.0.113.10/32"}} in policy["egress"][1]["to"]
    assert policy["egress"][1]["ports"] == [{"protocol": "TCP", "port": 8443}]
    assert policy["egress"][2]["to"] == [{"ipBlock": {"cidr": "192.0.2.20/32"}}, {"ipBlock": {"cidr": "192.0.2.21/32"}}]
    assert policy["egress"][2]["ports"] == [{"protocol": "TCP", "port": 6443}]  # the API server: it creates pods
    assert policy["egress"][3]["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    test = kinds["Pod"]
    assert test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test["spec"]["containers"][0]["args"] == ["run", "smoke"]
    assert test["spec"]["automountServiceAccountToken"] is False


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches a pod's labels, as the API server reads one (the operators the chart uses)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for term in selector.get("matchExpressions", []):
        present = term["key"] in labels
        match term["operator"]:
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
            case "In":
                ok = present and labels[term["key"]] in term["values"]
            case "NotIn":
                ok = not present or labels[term["key"]] not in term["values"]
            case other:
                raise AssertionError(f"operator {other} not understood here")
        if not ok:
            return False
    return True


def test_engine_pods_get_an_egress_only_network_policy_of_their_own_and_step_pods_none() -> None:
    from outpost.executors.kubernetes import objects

    kinds = valid(render(EVERYTHING, namespace="ci"))
    runner, engine = kinds["NetworkPolicy"]["spec"], kinds["NetworkPolicy/engine"]["spec"]
    assert engine["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in engine  # nothing comes in
    assert engine["egress"] == runner["egress"]  # DNS, control plane, API server, egressTo: what an engine reaches
    assert engine["egress"][0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert engine["egress"][2]["ports"] == [{"protocol": "TCP", "port": 6443}]  # it creates its step pods
    assert engine["egress"][3] == EVERYTHING["networkPolicy"]["egressTo"][0]
    # The engine policy selects engine pods by the labels the executor gives them (with any runner's mark), and
    # neither the runner pod nor step pods; the runner's policy selects the runner pod only.
    mark = objects.runner_mark("data-outpost-runner-0", "/var/lib/outpost")
    engine_pod = objects.engine_labels("b-42", mark)
    step_pod = objects.step_labels("b-42", "unit tests", mark)
    runner_pod = kinds["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert selects(engine["podSelector"], engine_pod)
    assert selects(engine["podSelector"], objects.engine_labels("b-43", None))
    assert not selects(engine["podSelector"], runner_pod)
    assert not selects(engine["podSelector"], step_pod)
    assert selects(runner["podSelector"], runner_pod)
    assert not selects(runner["podSelector"], engine_pod)
    assert not selects(runner["podSelector"], step_pod)
    # Without engine pods there is only the runner's policy.
    off = valid(render(_merged(EVERYTHING, {"engine": {"enabled": False}}), namespace="ci"))
    assert "NetworkPolicy" in off
    assert "NetworkPolicy/engine" not in off


def test_the_pod_timeouts_reach_the_runner_through_the_config_map(monkeypatch: pytest.MonkeyPatch) -> None:
    from outpost.cli.agent import runner_start

    defaults = valid(render(REQUIRED))["ConfigMap"]["data"]
    assert {k: v for k, v in defaults.items() if k.endswith("_TIMEOUT")} == {
        "OUTPOST_PULL_TIMEOUT": "30",
        "OUTPOST_PENDING_TIMEOUT": "120",
        "OUTPOST_NODE_LOST_TIMEOUT": "60",
    }
    config = valid(render(EVERYTHING, namespace="ci"))["ConfigMap"]["data"]
    # The ConfigMap's values, as the runner's environment, are the runner's options.
    for name in ("OUTPOST_PULL_TIMEOUT", "OUTPOST_PENDING_TIMEOUT", "OUTPOST_NODE_LOST_TIMEOUT"):
        monkeypatch.setenv(name, config[name])
    params = runner_start.make_context("start", ["--url", "https://ci.example"]).params
    assert (params["pull_timeout"], params["pending_timeout"], params["node_lost_timeout"]) == (12.5, 300.0, 45.0)


def test_the_chart_role_is_the_runner_role_the_executor_is_built_against() -> None:
    from outpost.executors.kubernetes import objects

    role = valid(render(REQUIRED))["Role"]
    expected = objects.runner_role("outpost-runner", "outpost").to_dict()
    assert role["rules"] == expected["rules"]


def test_the_chart_engine_role_is_the_engine_role_and_bound_to_the_engine_service_account() -> None:
    from outpost.executors.kubernetes import objects

    kinds = valid(render(REQUIRED))
    assert kinds["Role/engine"]["rules"] == objects.engine_role("outpost-runner-engine", "outpost").to_dict()["rules"]
    binding = kinds["RoleBinding/engine"]
    assert binding["roleRef"]["name"] == kinds["Role/engine"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": kinds["ServiceAccount/engine"]["metadata"]["name"], "namespace": "outpost"}
    ]
    config = kinds["ConfigMap"]["data"]
    assert config["OUTPOST_ENGINE_SERVICE_ACCOUNT"] == kinds["ServiceAccount/engine"]["metadata"]["name"]
    assert config["OUTPOST_ENGINE_IMAGE"] == runner_container(kinds)["image"]  # by default, the runner's image


def test_engine_pods_take_their_image_and_placement_from_the_chart_or_run_in_the_runner_when_disabled() -> None:
    from outpost.executors.kubernetes import engines

    engine = {
        "image": {"repository": "registry.corp:5000/outpost-engine", "tag": "1.2.4"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "engines", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "engines"},
        "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"memory": "600Mi"}},
    }
    rwx = {"data": {"accessMode": "ReadWriteMany"}}
    config = valid(render({**REQUIRED, **rwx, "engine": engine}))["ConfigMap"]["data"]
    assert config["OUTPOST_ENGINE_IMAGE"] == "registry.corp:5000/outpost-engine:1.2.4"
    where = engines.placement_of({"engine_pods": config["OUTPOST_ENGINE_PODS"]})  # as the runner reads it
    assert where.node_selector == {"pool": "engines"}
    assert [t.to_dict() for t in where.tolerations] == engine["tolerations"]
    assert (dict(where.requests), dict(where.limits)) == (engine["resources"]["requests"], {"memory": "600Mi"})
    kinds = valid(render({**REQUIRED, "engine": {"enabled": False}}))
    assert not any(key.endswith("/engine") for key in kinds)
    assert not any(name.startswith("OUTPOST_ENGINE") for name in kinds["ConfigMap"]["data"])


def test_build_volume_claims_take_their_size_class_retention_and_cap_from_the_chart() -> None:
    from outpost.cli.agent import runner_start

    config = valid(render(REQUIRED))["ConfigMap"]["data"]
    assert {k: v for k, v in config.items() if "VOLUME" in k} == {
        "OUTPOST_VOLUME_SIZE": "10Gi",
        "OUTPOST_VOLUME_RETENTION": "7d",
        "OUTPOST_VOLUMES_PER_PIPELINE": "5",
    }
    volumes = {"size": "50Gi", "storageClassName": "fast-ssd", "retention": "36h", "maxPerPipeline": 12}
    kinds = valid(render({**REQUIRED, "runner": {"volumeReuse": "branch"}, "volumes": volumes}))
    config = kinds["ConfigMap"]["data"]
    assert (config["OUTPOST_VOLUME_SIZE"], config["OUTPOST_VOLUME_STORAGE_CLASS"]) == ("50Gi", "fast-ssd")
    assert (config["OUTPOST_VOLUME_RETENTION"], config["OUTPOST_VOLUMES_PER_PIPELINE"]) == ("36h", "12")
    assert arg(runner_container(kinds), "volume-reuse") == "branch"
    read = {param.envvar for param in runner_start.params if isinstance(param.envvar, str)}
    assert {k for k in config if "VOLUME" in k} <= read
    for off in ({"runner": {"volumeReuse": "none"}}, {"engine": {"enabled": False}}):  # no claims of their own
        assert not any("VOLUME" in k for k in valid(render({**REQUIRED, **off}))["ConfigMap"]["data"])


def test_a_node_choice_for_step_pods_with_build_volume_claims_is_refused() -> None:
    import helm_python

    rwx = {"data": {"accessMode": "ReadWriteMany"}}
    with pytest.raises(helm_python.HelmRenderError, match=r"step pods follow their engine pod's node"):
        render({**REQUIRED, **rwx, "stepPods": {"nodeSelector": {"pool": "builds"}}})
    render({**REQUIRED, **rwx, "stepPods": {"nodeSelector": {"pool": "builds"}}, "runner": {"volumeReuse": "none"}})


def test_a_node_choice_for_engine_pods_with_a_read_write_once_claim_is_refused() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match=r"engine\.nodeSelector and engine\.affinity need"):
        render({**REQUIRED, "engine": {"nodeSelector": {"pool": "engines"}}})


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"controlPlane": {"url": "ci.example"}}, "/controlPlane/url"),
        ({"controlPlane": {"url": "https://ci.example"}, "replicas": 3}, "'replicas' not allowed"),
        ({"runner": {"concurrency": 0}}, "/runner/concurrency"),
        ({"runner": {"volumeReuse": "cache"}}, "/runner/volumeReuse"),
        ({"volumes": {"size": "big"}}, "/volumes/size"),
        ({"volumes": {"retention": "a week"}}, "/volumes/retention"),
        ({"volumes": {"maxPerPipeline": 0}}, "/volumes/maxPerPipeline"),
        ({"volumes": {"storageClass": "fast"}}, "'storageClass' not allowed"),
        ({"data": {"accessMode": "ReadOnlyMany"}}, "/data/accessMode"),
        ({"data": {"size": "lots"}}, "/data/size"),
        ({"namespace": {"name": "Outpost_Builds"}}, "/namespace/name"),
        ({"namespace": {"podSecurity": {"enforce": "strict"}}}, "/namespace/podSecurity/enforce"),
        ({"networkPolicy": {"controlPlanePort": 70000}}, "/networkPolicy/controlPlanePort"),
        ({"networkPolicy": {"apiServerPort": 0}}, "/networkPolicy/apiServerPort"),
        ({"networkPolicy": {"apiServerCIDRs": ["kubernetes.default"]}}, "/networkPolicy/apiServerCIDRs/0"),
        ({"timeouts": {"pull": 0}}, "/timeouts/pull"),
        ({"timeouts": {"pending": -5}}, "/timeouts/pending"),
        ({"timeouts": {"nodeLost": "60s"}}, "/timeouts/nodeLost"),
        ({"timeouts": {"node_lost": 60}}, "'node_lost' not allowed"),
        ({"existingSecret": "Not A Name"}, "/existingSecret"),
        ({"stepPods": {"tolerations": [{"key": "dedicated", "efect": "NoSchedule"}]}}, "/stepPods/tolerations/0"),
        ({"stepPods": {"resources": {"limit": {"memory": "1Gi"}}}}, "/stepPods/resources"),
        ({"stepPods": {"nodeSelectors": {"disk": "ssd"}}}, "'nodeSelectors' not allowed"),
        ({"builder": {"seccompProfile": "RuntimeDefault"}}, "/builder/seccompProfile"),
        ({"builder": {"scratchRegistry": "https://registry.corp"}}, "/builder/scratchRegistry"),
        ({"builder": {"dockerInDocker": "yes"}}, "/builder/dockerInDocker"),
    ],
)
def test_the_values_schema_refuses_bad_values(values: dict[str, Any], says: str) -> None:
    import helm_python
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate({**defaults, **REQUIRED}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**defaults, **REQUIRED, **values}, schema)
    with pytest.raises(helm_python.HelmValuesError, match=says):  # and helm refuses to render them
        render({**REQUIRED, **values})


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"installToken": "opi_x"}, "controlPlane.url is required"),
        ({"controlPlane": {"url": "https://ci.example"}}, "installToken \\(or existingSecret\\) is required"),
        ({**REQUIRED, "networkPolicy": {"enabled": True}}, "networkPolicy.controlPlaneCIDRs is required"),
        (
            {**REQUIRED, "networkPolicy": {"enabled": True, "controlPlaneCIDRs": ["203.0.113.10/32"]}},
            "networkPolicy.apiServerCIDRs is required",
        ),
        ({**REQUIRED, "helmTest": {"enabled": True, "tokenSecret": "t"}}, "helmTest.pipeline is required"),
        ({**REQUIRED, "stepPods": {"nodeSelector": {"disk": "ssd"}}}, "need data.accessMode=ReadWriteMany"),
        ({**REQUIRED, "builder": {"image": "buildah:1"}}, "builder.scratchRegistry is required with builder.image"),
        (
            {**REQUIRED, "builder": {"image": "buildah:1", "scratchRegistry": "r.corp/s"}},
            "builder.seccompProfile=Unconfined needs namespace.podSecurity.enforce=privileged",
        ),
        (
            {**REQUIRED, "builder": {"dockerInDocker": True, "dindImage": "docker:dind"}},
            "builder.dockerInDocker runs a privileged pod per build: it needs namespace.podSecurity.enforce=privileged",
        ),
        ({**REQUIRED, **PRIVILEGED, "builder": {"dockerInDocker": True}}, "builder.dindImage is required"),
        (
            {
                **REQUIRED,
                **PRIVILEGED,
                "builder": {"dockerInDocker": True, "dindImage": "docker:dind"},
                "data": {"accessMode": "ReadWriteMany"},
            },
            "builder.dockerInDocker needs the runner's pods on its node",
        ),
    ],
)
def test_a_missing_required_value_is_refused_with_what_to_set(values: dict[str, Any], says: str) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match=says):
        render(values)


async def test_the_chart_role_is_enough_for_the_executor_to_run_a_step(kube_cluster: Any, busybox_image: str) -> None:
    from outpost.executors.base import StepJob
    from outpost.executors.kubernetes.executor import KubernetesExecutor
    from tests.kube.cluster import NAMESPACE, RUNNER_TOKEN

    role = valid(render({**REQUIRED, "namespace": {"create": False}}, namespace=NAMESPACE))["Role"]
    # The runner's service account is now held to the chart's Role instead of the product's own copy.
    kube_cluster.store.roles[RUNNER_TOKEN] = (NAMESPACE, role["rules"])
    build_id = f"h{uuid.uuid4().hex[:8]}"
    folder = kube_cluster.claim_folder() / "builds" / build_id
    (folder / "volume").mkdir(parents=True)
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    job = StepJob(
        step="hello",
        script="echo hello from the chart\n",
        env={"WHO": "chart"},
        workdir=folder / "volume",
        image=busybox_image,
    )
    options = kube_cluster.executor_options()
    async with KubernetesExecutor(folder / "volume", folder / "scratch", build_id=build_id, options=options) as ex:
        assert await ex.run(job, sink) == 0
    assert b"hello from the chart" in out
    assert kube_cluster.store.denied == []


ONE_STEP = "version: '1.0'\nsteps:\n  hello:\n    image: {image}\n    commands: [echo hello from $(hostname)]\n"


def as_the_pod_runs_it(
    kinds: dict[str, dict[str, Any]], pod: str, node: str, claim_folder: Path, kubeconfig: Path
) -> tuple[list[str], dict[str, str]]:
    """The runner container's command line and environment as the kubelet would give them to it in pod `pod` on
    `node`: the ConfigMap and env entries (downward API, the token Secret) with $(VAR) expanded, its data claim
    mounted where `claim_folder` is, and a kubeconfig file standing in for the in-cluster service account."""
    container = runner_container(kinds)
    env: dict[str, str] = dict(kinds["ConfigMap"]["data"])
    known = {"metadata.name": pod, "spec.nodeName": node}
    for entry in container["env"]:
        source = entry["valueFrom"]
        if "fieldRef" in source:
            env[entry["name"]] = known[source["fieldRef"]["fieldPath"]]
        else:
            assert source["secretKeyRef"] == {"name": kinds["Secret"]["metadata"]["name"], "key": "token"}
            env[entry["name"]] = kinds["Secret"]["stringData"]["token"]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data")

    def mounted(text: str) -> str:
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], text).replace(
            mount, str(claim_folder)
        )

    env = {key: mounted(value) for key, value in env.items()}
    return [mounted(a) for a in container["args"]], {**env, "KUBECONFIG": str(kubeconfig)}


def step_nodes(cluster: Any) -> set[str]:
    """The nodes every step pod was bound to, from the API's history (the pods themselves are gone)."""

    async def read() -> set[str]:
        return {
            obj["spec"]["nodeName"]
            for _, _, plural, obj in cluster.store.history
            if plural == "pods" and "outpost.io/build" in obj["metadata"].get("labels", {})
        }

    nodes: set[str] = cluster.call(read)
    return nodes


def step_resources(cluster: Any) -> list[dict[str, Any]]:
    """The resources of every step pod made, in order."""

    async def read() -> list[dict[str, Any]]:
        return [
            obj["spec"]["containers"][0].get("resources", {})
            for _, kind, plural, obj in cluster.store.history
            if plural == "pods" and kind == "ADDED" and "outpost.io/build" in obj["metadata"].get("labels", {})
        ]

    found: list[dict[str, Any]] = cluster.call(read)
    return found


def engine_pods_made(cluster: Any) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        return [
            obj
            for _, kind, plural, obj in cluster.store.history
            if plural == "pods" and kind == "ADDED" and "outpost.io/engine" in obj["metadata"].get("labels", {})
        ]

    found: list[dict[str, Any]] = cluster.call(read)
    return found


def test_the_runner_as_the_chart_starts_it_runs_builds_on_its_claim_keeps_its_registration_and_passes_helm_test(
    tmp_path: Path,
    control_plane: ControlPlane,
    processes: list[Process],
    kube_cluster: Any,
    busybox_image: str,
    engine_image: str,
) -> None:
    from tests.kube.cluster import ENGINE_TOKEN, NAMESPACE, RUNNER_TOKEN

    repository, _, tag = engine_image.rpartition(":")
    values = {
        "controlPlane": {"url": control_plane.url},
        "installToken": control_plane.install_token(),
        "namespace": {"create": False},
        "helmTest": {"enabled": True, "pipeline": "one", "tokenSecret": "outpost-api-token"},
        "engine": {"image": {"repository": repository, "tag": tag}},
    }
    kinds = valid(render(values, namespace=NAMESPACE))
    # The runner and its engine pods are held to the chart's Roles; the engine pods get the token of the chart's
    # engine service account.
    kube_cluster.store.roles[RUNNER_TOKEN] = (NAMESPACE, kinds["Role"]["rules"])
    kube_cluster.store.roles[ENGINE_TOKEN] = (NAMESPACE, kinds["Role/engine"]["rules"])
    kube_cluster.service_tokens[(NAMESPACE, kinds["ServiceAccount/engine"]["metadata"]["name"])] = ENGINE_TOKEN
    # What the StatefulSet controller makes for pod outpost-runner-0 from the chart's volumeClaimTemplate.
    (template,) = kinds["StatefulSet"]["spec"]["volumeClaimTemplates"]
    pod = f"{kinds['StatefulSet']['metadata']['name']}-0"
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", **template}
    claim["metadata"] = {"name": f"{template['metadata']['name']}-{pod}", "namespace": NAMESPACE}
    kube_cluster.call(lambda: kube_cluster.store.create("persistentvolumeclaims", NAMESPACE, claim))
    folder = kube_cluster.claim_folder(claim["metadata"]["name"])
    folder.mkdir(parents=True)
    args, env = as_the_pod_runs_it(kinds, pod, "node-c", folder, kube_cluster.runner_kubeconfig)
    runner = Process("chart-runner", args, tmp_path / "chart-runner.log", outpost_env(**env))
    processes.append(runner)
    runner.start()
    (tmp_path / "one.yml").write_text(ONE_STEP.format(image=busybox_image))
    assert control_plane.cli("pipeline", "create", "one", "--file", str(tmp_path / "one.yml")).returncode == 0

    for attempt in ("first", "after a restart"):
        run = control_plane.cli("run", "one", timeout=120)
        assert run.returncode == 0, f"{attempt}: {run.stdout}{run.stderr}{runner.log.read_text()}"
        assert "hello from " in run.stdout
        if attempt == "first":
            assert (folder / "runner.json").exists()  # its registration is on the claim
            runner.stop()
            runner.start()  # the same pod again: the same claim, the install token already used
    # `helm test`: the test pod's command, with its environment, runs one build of the pipeline and passes.
    test = kinds["Pod"]["spec"]["containers"][0]
    assert test["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "outpost-api-token", "key": "token"}
    test_env = outpost_env(**kinds["ConfigMap"]["data"], OUTPOST_TOKEN=control_plane.token)
    hook = subprocess.run(
        [sys.executable, "-m", "outpost", *test["args"]], env=test_env, capture_output=True, text=True, timeout=120
    )
    assert hook.returncode == 0, hook.stdout + hook.stderr
    assert "hello from " in hook.stdout
    assert kube_cluster.store.denied == []
    assert step_nodes(kube_cluster) == {"node-c"}
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["stepPods"]["resources"]
    assert step_resources(kube_cluster) == [defaults] * 3  # the chart's step-pod resources, on every step pod
    engines = engine_pods_made(kube_cluster)  # each build's engine in a pod of its own, on the claim's node
    assert [e["spec"]["nodeName"] for e in engines] == ["node-c"] * 3
    engine_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["engine"]["resources"]
    assert [e["spec"]["containers"][0]["resources"] for e in engines] == [engine_defaults] * 3
    runners = json.loads(control_plane.cli("runners", "list", "--json").stdout)
    assert [r["name"] for r in runners] == [pod]  # one registration, kept


def test_runtime_create_kubernetes_prints_a_helm_install_the_chart_accepts(control_plane: ControlPlane) -> None:
    import helm_python

    done = control_plane.cli("runtime", "create", "corp-k8s", "--kubernetes")
    assert done.returncode == 0, done.stderr
    line = next(line.strip() for line in done.stdout.splitlines() if line.strip().startswith("helm install"))
    words = shlex.split(line)
    assert words[:4] == ["helm", "install", "outpost-runner", "deploy/helm/outpost-runner"]
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    values: dict[str, Any] = {}
    for pair in sets:
        key = pair.partition("=")[0]
        node: Any = defaults
        for part in key.split("."):
            assert isinstance(node, dict), f"--set {key}: not a value of the chart"
            assert part in node, f"--set {key}: not a value of the chart"
            node = node[part]
        parsed = helm_python.parse_set_string(pair)
        values = _merged(values, parsed)
    assert values["controlPlane"]["url"] == control_plane.url
    assert values["installToken"].startswith("opi_")
    kinds = valid(render(values))
    assert kinds["Secret"]["stringData"]["token"] == values["installToken"]


def _merged(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(into)
    for key, value in more.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_the_k8s_smoke_installs_the_chart_with_a_fresh_install_token_of_its_own_runtime(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The half of `make k8s-smoke` that needs no cluster: the objects it would apply, in order, valid."""
    from tests.kube import smoke

    for name, value in control_plane.cli_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OUTPOST_SMOKE_IMAGE", "registry.corp:5000/outpost/runner:0.1.0")
    token = smoke.install_token("smoke-test")
    objects = smoke.render("outpost-smoke-test", token)
    kinds = valid(objects)
    assert [o["kind"] for o in objects] == ["Namespace", "ServiceAccount", "ServiceAccount", "Role", "Role",
                                            "RoleBinding", "RoleBinding", "Secret", "ConfigMap",
                                            "StatefulSet"]  # fmt: skip
    assert kinds["Secret"]["stringData"]["token"] == token
    assert token.startswith("opi_")
    assert runner_container(kinds)["image"] == "registry.corp:5000/outpost/runner:0.1.0"
    assert kinds["ConfigMap"]["data"]["OUTPOST_URL"] == control_plane.url


def test_every_setting_the_chart_gives_the_runner_is_one_outpost_runner_start_reads() -> None:
    from outpost.cli.agent import runner_start

    read = {param.envvar for param in runner_start.params if isinstance(param.envvar, str)}
    kinds = valid(render(EVERYTHING, namespace="ci"))
    given = {key for key in kinds["ConfigMap"]["data"] if key.startswith("OUTPOST_")}
    given |= {e["name"] for e in runner_container(kinds)["env"] if e["name"].startswith("OUTPOST_")}
    assert given - read == set()  # a misspelt name would be ignored by the runner, silently
    builders = {"OUTPOST_BUILDER_IMAGE", "OUTPOST_SCRATCH_REGISTRY", "OUTPOST_BUILDER_SECCOMP"}
    timeouts = {"OUTPOST_PULL_TIMEOUT", "OUTPOST_PENDING_TIMEOUT", "OUTPOST_NODE_LOST_TIMEOUT"}
    assert {"OUTPOST_STEP_PODS", *builders, *timeouts} <= given


def test_the_docker_in_docker_opt_in_reaches_the_runner_only_when_asked_for_in_a_privileged_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outpost.cli.agent import runner_start

    assert "OUTPOST_DOCKER_IN_DOCKER" not in valid(render(REQUIRED))["ConfigMap"]["data"]  # off by default
    values = {**REQUIRED, **PRIVILEGED, "builder": {"dockerInDocker": True, "dindImage": "registry.corp/dind:20"}}
    kinds = valid(render(values, namespace="ci"))
    config = kinds["ConfigMap"]["data"]
    assert config["OUTPOST_DOCKER_IN_DOCKER"] == "true"
    assert config["OUTPOST_DIND_IMAGE"] == "registry.corp/dind:20"
    assert arg(runner_container(kinds), "node-name") == "$(NODE_NAME)"  # the build's pods share the runner's node
    assert kinds["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    # The ConfigMap's values, as the runner's environment, are the runner's options.
    for name in ("OUTPOST_DOCKER_IN_DOCKER", "OUTPOST_DIND_IMAGE"):
        monkeypatch.setenv(name, config[name])
    params = runner_start.make_context("start", ["--url", "https://ci.example"]).params
    assert params["docker_in_docker"] is True
    assert params["dind_image"] == "registry.corp/dind:20"
