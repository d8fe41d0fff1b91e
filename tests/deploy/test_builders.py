"""The deploy room's pure parts: the kubeconfig a step gets, the rollout's state by `kubectl rollout status`'s rules,
the image and rollback patches, pull secrets and the manifest file's documents."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from outpost.containers.auth import RegistryAuth
from outpost.deploy import clusters, manifests, pullsecrets, rollout
from outpost.deploy.clusters import ClusterError
from outpost.wire import ClusterAccess

PROD = ClusterAccess(name="prod-eu", server="https://10.0.0.1:6443", ca_pem="-----BEGIN CERTIFICATE-----\nx\n",
                     token="prod-token-123", namespace="shop")  # fmt: skip
STAGING = ClusterAccess(name="staging", server="https://10.0.0.2:6443", runner_secret="STAGING_TOKEN")


def test_the_kubeconfig_has_a_context_per_usable_cluster_named_after_it_and_the_chosen_one_current() -> None:
    config = clusters.kubeconfig({"prod-eu": PROD, "staging": STAGING}, {"STAGING_TOKEN": "st-token\n"}, "staging")
    assert config["current-context"] == "staging"
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    assert contexts["prod-eu"] == {"cluster": "prod-eu", "user": "prod-eu", "namespace": "shop"}
    users = {u["name"]: u["user"] for u in config["users"]}
    assert users == {"prod-eu": {"token": "prod-token-123"}, "staging": {"token": "st-token"}}
    ca = next(c["cluster"] for c in config["clusters"] if c["name"] == "prod-eu")["certificate-authority-data"]
    assert base64.b64decode(ca).decode() == PROD.ca_pem


def test_a_cluster_whose_runner_secret_is_missing_is_left_out_and_the_first_usable_one_is_current() -> None:
    config = clusters.kubeconfig({"staging": STAGING, "prod-eu": PROD}, {}, "staging")
    assert [c["name"] for c in config["contexts"]] == ["prod-eu"]
    assert config["current-context"] == "prod-eu"
    with pytest.raises(ClusterError, match="runner secret 'STAGING_TOKEN', which this runner does not have"):
        clusters.token(STAGING, {})


def test_the_values_to_mask_are_every_usable_credential() -> None:
    keyed = ClusterAccess(name="k", server="https://k", client_cert_pem="CERT", client_key_pem="KEY-PEM")
    found = clusters.secret_values([PROD, STAGING, keyed], {"STAGING_TOKEN": " st-token "})
    assert found == {"prod-token-123", "st-token", "KEY-PEM"}


def deployment(**status: Any) -> dict[str, Any]:
    generation = status.pop("generation", 2)
    conditions = status.pop("conditions", [])
    return {
        "metadata": {
            "name": "web",
            "generation": generation,
            "uid": "u1",
            "annotations": {rollout.REVISION: "2"},
        },
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}},
        },
        "status": {"observedGeneration": 2, "conditions": conditions, **status},
    }


@pytest.mark.parametrize(
    ("status", "done", "failed", "message"),
    [
        ({"observedGeneration": 1}, False, False, "waiting for deployment 'web' spec update to be observed"),
        ({"updatedReplicas": 1}, False, False, "1 of 2 updated replicas are ready"),
        ({"updatedReplicas": 2, "replicas": 3}, False, False, "1 old replicas are pending termination"),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}, False, False,
         "1 of 2 updated replicas are available"),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 2}, True, False,
         "deployment 'web' successfully rolled out"),
        ({"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
         False, True, "deployment 'web' exceeded its progress deadline"),
    ],
)  # fmt: skip
def test_the_rollout_state_follows_kubectl_rollout_status(
    status: dict[str, Any], done: bool, failed: bool, message: str
) -> None:
    assert rollout.state(deployment(**status)) == rollout.RolloutState(done, failed, message)


def test_the_image_patch_sets_every_container_and_adds_the_pull_secret_once() -> None:
    ops = rollout.image_patch(deployment(), "z:2", "outpost-registry-corp")
    assert ops == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "z:2"},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "z:2"},
        {"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": [{"name": "outpost-registry-corp"}]},
    ]
    referenced = deployment()
    referenced["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "outpost-registry-corp"}]
    assert len(rollout.image_patch(referenced, "z:2", "outpost-registry-corp")) == 2


def test_the_rollback_patch_puts_back_the_previous_revisions_template_without_its_hash_label() -> None:
    def replicaset(revision: str, image: str, owner: str = "u1") -> dict[str, Any]:
        labels = {"app": "web", rollout.HASH: f"h{revision}"}
        return {
            "metadata": {"annotations": {rollout.REVISION: revision}, "ownerReferences": [{"uid": owner}]},
            "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"image": image}]}}},
        }

    current = deployment()
    current["metadata"]["annotations"][rollout.REVISION] = "3"
    sets = [replicaset("1", "v1"), replicaset("2", "v2"), replicaset("3", "v3"), replicaset("2", "other", "u9")]
    ops, previous = rollout.rollback_patch(current, sets)
    assert previous == 2
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "v2"}]}}
    assert ops == [{"op": "replace", "path": "/spec/template", "value": template}]
    current["metadata"]["annotations"][rollout.REVISION] = "1"
    with pytest.raises(ClusterError, match="no revision before 1"):
        rollout.rollback_patch(current, sets)


def test_a_pull_secret_holds_the_registry_as_the_kubelet_looks_it_up_and_is_recognised_later() -> None:
    auth = RegistryAuth(domain="registry.corp:5000", username="ci", password="pw", name="Corp Registry")
    secret = pullsecrets.secret(auth, "registry.corp:5000/shop/web:2", "shop")
    assert secret["metadata"]["name"] == "outpost-registry-corp-registry"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config["auths"]["registry.corp:5000"]["auth"] == base64.b64encode(b"ci:pw").decode()
    assert pullsecrets.covers(secret, "registry.corp:5000")
    assert not pullsecrets.covers(secret, "docker.io")
    assert pullsecrets.config_key("busybox:1") == pullsecrets.DOCKER_HUB


def test_a_manifest_file_gives_its_objects_and_a_bad_one_says_where() -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: Deployment\n"
    with pytest.raises(ClusterError, match=r"k8s.yml: document 3 \(Deployment\) has no metadata.name"):
        manifests.documents(text, "k8s.yml")
    with pytest.raises(ClusterError, match=r"k8s.yml:2:2: not valid YAML: expected ',' or ']'"):
        manifests.documents("a: [\nb", "k8s.yml")
    with pytest.raises(ClusterError, match="no Kubernetes object"):
        manifests.documents("---\n", "k8s.yml")
    assert [d["kind"] for d in manifests.documents(text.rsplit("---", 1)[0], "k8s.yml")] == ["Secret"]
