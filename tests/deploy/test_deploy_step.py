"""The `deploy` step and KUBECONFIG in freestyle steps, run by the engine on the local and the Docker executor
against the test cluster (API server emulator, Deployment controller, fake kubelets running the pods on the tests'
Docker engine), through a Kubernetes integration whose service account is held to a Role in its namespace."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from outpost.engine import BuildContext, BuildEngine, BuildOutcome
from outpost.executors.base import Executor
from outpost.executors.docker import DockerExecutor
from outpost.executors.local import LocalExecutor
from outpost.wire import ClusterAccess, RegistryAccess
from tests import containers
from tests.components import need
from tests.engine.recorder import Recorder
from tests.kube import fixtures

dockerd, busybox_image, kube_cluster, registry = (
    containers.dockerd,
    containers.busybox_image,
    fixtures.kube_cluster,
    containers.registry,
)

pytestmark = pytest.mark.timeout(180)

NAMESPACE = "default"
TOKEN = "prod-eu-deployer-9f3b6c1d2e"  # the integration's service account, not the runner's
ROLE = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch", "create"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
]
BAD_IMAGE = "127.0.0.1:1/missing/app:1"  # a registry nobody listens on: the pull fails at once


def deployment(name: str, image: str, deadline: int = 600) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image, "command": ["sleep", "3600"]}]},
            },
        },
    }


class Deployments:
    """The cluster as its admin sees it: creates a Deployment and reads it back."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        cluster.store.roles[TOKEN] = (NAMESPACE, ROLE)
        self.access = ClusterAccess(name="prod-eu", server=cluster.url, token=TOKEN, namespace=NAMESPACE)

    def create(self, name: str, image: str, deadline: int = 600) -> None:
        async def create() -> None:
            await self.cluster.store.create("deployments", NAMESPACE, deployment(name, image, deadline))

        self.cluster.call(create)
        self.until(name, lambda d: (d.get("status") or {}).get("availableReplicas") == 1, "its first rollout")

    def get(self, name: str) -> dict[str, Any]:
        return next(d for d in self.cluster.objects("deployments", NAMESPACE) if d["metadata"]["name"] == name)

    def until(self, name: str, check: Any, what: str) -> None:
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if check(self.get(name)):
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    def running_images(self, name: str) -> list[str]:
        pods = [
            p
            for p in self.cluster.pods(NAMESPACE)
            if p["metadata"]["labels"].get("app") == name and not p["metadata"].get("deletionTimestamp")
        ]
        return [p["spec"]["containers"][0]["image"] for p in pods if (p.get("status") or {}).get("phase") == "Running"]


@pytest.fixture
def cluster(kube_cluster: Any) -> Deployments:
    return Deployments(kube_cluster)


async def run_build(
    tmp_path: Path, yaml: str, executor: str, dockerd: Any, access: ClusterAccess, *, kube: Any = None, **ctx: Any
) -> tuple[BuildOutcome, Recorder]:
    """Runs one build of `yaml` on `executor`, given the cluster `access`: how it ended, and what it reported."""
    build_id = f"t{uuid.uuid4().hex[:10]}"
    if executor == "kubernetes":  # the build's folders in the test cluster's work claim, as a kubernetes runner has
        tmp_path = kube.claim_folder() / "builds" / build_id
        (tmp_path / "volume").mkdir(parents=True)
    context = BuildContext(
        build_id=build_id,
        account="acme",
        pipeline="shop",
        yaml=yaml,
        volume=tmp_path / "volume",
        scratch=tmp_path / "scratch",
        clusters={access.name: access},
        **ctx,
    )
    chosen: Executor
    if executor == "kubernetes":
        from outpost.executors.kubernetes.executor import KubernetesExecutor

        options = kube.executor_options()
        chosen = KubernetesExecutor(context.volume, context.scratch, build_id=build_id, options=options)
    elif executor == "docker":
        options = {"docker_host": dockerd.host}
        chosen = DockerExecutor(context.volume, context.scratch, build_id=build_id, options=options)
    else:
        chosen = LocalExecutor(context.volume, context.scratch, build_id=build_id)
    recorder = Recorder()
    return await BuildEngine(context, chosen, recorder).run(), recorder


def succeeded(outcome: BuildOutcome, rec: Recorder, step: str) -> str:
    """The log of `step` in a build that must have succeeded; shown when it did not."""
    log = rec.text(step)
    assert outcome == BuildOutcome("success"), log
    return log


SERVICE_DEPLOY = """version: '1.0'
steps:
  ship:
    type: deploy
    kind: kubernetes
    cluster: prod-eu
    service: shop
    candidate:
      image: ${{APP_IMAGE}}:${{CF_SHORT_REVISION}}
    timeout: '60'
"""


@pytest.mark.parametrize("executor", ["local", "docker"])
async def test_a_deploy_step_sets_the_candidate_image_and_waits_until_the_new_pods_are_ready(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any, executor: str
) -> None:
    dockerd.cli("tag", busybox_image, "outpost-shop:abc1234")
    cluster.create("shop", busybox_image)

    outcome, rec = await run_build(
        tmp_path, SERVICE_DEPLOY, executor, dockerd, cluster.access,
        variables={"APP_IMAGE": "outpost-shop", "CF_SHORT_REVISION": "abc1234"},
    )  # fmt: skip

    log = succeeded(outcome, rec, "ship")
    assert 'deployment "shop" in namespace "default": image outpost-shop:abc1234' in log
    assert 'deployment "shop" rolled out: revision 2' in log
    # The step ended once the new pod was ready and the old one gone: what runs now is the candidate.
    assert cluster.get("shop")["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert cluster.running_images("shop") == ["outpost-shop:abc1234"]
    assert TOKEN not in log


ROLLBACK = """version: '1.0'
steps:
  ship:
    type: deploy
    kind: kubernetes
    cluster: prod-eu
    namespace: default
    service: shop
    candidate:
      image: {image}
    timeout: '{timeout}'
    rollback_on_failure: {rollback}
"""


async def test_a_bad_image_fails_the_step_with_the_deployments_conditions_and_the_pods_pull_errors(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any
) -> None:
    cluster.create("shop", busybox_image)

    outcome, rec = await run_build(
        tmp_path, ROLLBACK.format(image=BAD_IMAGE, rollback="false", timeout=8), "local", dockerd, cluster.access
    )

    log = rec.text("ship")
    assert outcome.status == "failure", log
    assert rec.final("ship").status == "failure"
    assert "the rollout of deployment 'shop' failed: timed out waiting for the rollout" in (
        rec.final("ship").message or ""
    )
    assert "the rollout failed: timed out waiting for the rollout; the deployment's conditions:" in log
    assert "  Available=" in log  # the Deployment's own conditions, as its status has them
    assert "  Progressing=True ReplicaSetUpdated" in log or "  Progressing=True NewReplicaSetCreated" in log
    assert f'Failed to pull image "{BAD_IMAGE}"' in log  # the pod's own warning event
    assert cluster.get("shop")["spec"]["template"]["spec"]["containers"][0]["image"] == BAD_IMAGE  # left as it is


async def test_with_rollback_on_failure_a_failed_rollout_brings_the_previous_revision_back(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any
) -> None:
    cluster.create("shop", busybox_image, deadline=6)  # the rollout fails by its own progress deadline

    outcome, rec = await run_build(
        tmp_path, ROLLBACK.format(image=BAD_IMAGE, rollback="true", timeout=90), "local", dockerd, cluster.access
    )

    log = rec.text("ship")
    assert outcome.status == "failure", log
    assert "the rollout failed: deployment 'shop' exceeded its progress deadline" in log
    assert "  Progressing=False ProgressDeadlineExceeded: ReplicaSet" in log
    assert "rollback_on_failure: rolling back to the template of revision 1" in log
    assert 'deployment "shop" rolled back: revision 3 runs the template of revision 1' in log
    assert "rolled back to the template of revision 1" in (rec.final("ship").message or "")
    found = cluster.get("shop")
    assert found["spec"]["template"]["spec"]["containers"][0]["image"] == busybox_image
    assert cluster.running_images("shop") == [busybox_image]


FILE_DEPLOY = """version: '1.0'
steps:
  render:
    image: alpine
    commands:
      - mkdir -p k8s
      - cp "$MANIFEST" k8s/app.yml
  apply:
    type: deploy
    kind: kubernetes
    cluster: prod-eu
    file_path: k8s/app.yml
    timeout: '60'
"""
MANIFEST = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${{APP}}-api
spec:
  replicas: 1
  selector:
    matchLabels: {app: ${{APP}}-api}
  template:
    metadata:
      labels: {app: ${{APP}}-api}
    spec:
      containers:
        - name: api
          image: ${{IMAGE}}
          command: [sleep, "3600"]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${{APP}}-worker
spec:
  selector:
    matchLabels: {app: ${{APP}}-worker}
  template:
    metadata:
      labels: {app: ${{APP}}-worker}
    spec:
      containers:
        - name: worker
          image: ${{IMAGE}}
          command: [sleep, "3600"]
"""


async def test_a_deploy_step_applies_every_document_of_a_file_with_its_variables_and_waits_for_the_rollouts(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any
) -> None:
    manifest = tmp_path / "app.yml"
    manifest.write_text(MANIFEST)
    variables = {"APP": "shop", "IMAGE": busybox_image, "MANIFEST": str(manifest)}

    outcome, rec = await run_build(tmp_path / "one", FILE_DEPLOY, "local", dockerd, cluster.access, variables=variables)

    log = succeeded(outcome, rec, "apply")
    assert "deployment.apps/shop-api created" in log
    assert "deployment.apps/shop-worker created" in log
    assert 'deployment "shop-worker" rolled out: revision 1' in log
    assert cluster.running_images("shop-api") == [busybox_image]

    outcome, rec = await run_build(tmp_path / "two", FILE_DEPLOY, "local", dockerd, cluster.access, variables=variables)
    assert outcome == BuildOutcome("success")
    assert "deployment.apps/shop-api unchanged" in rec.text("apply")


async def test_a_deploy_step_naming_a_cluster_the_build_was_not_given_at_run_time_ends_with_the_reason(
    tmp_path: Path, cluster: Deployments
) -> None:
    """A name known only once a step exported it cannot be checked at build start: its step says it."""
    yaml = (
        "version: '1.0'\nsteps:\n  pick:\n    image: alpine\n    commands: [cf_export TARGET=staging]\n"
        + SERVICE_DEPLOY.split("steps:\n", 1)[1].replace("cluster: prod-eu", "cluster: ${{TARGET}}")
    )
    outcome, rec = await run_build(tmp_path, yaml, "local", None, cluster.access, variables={"APP_IMAGE": "x"})
    assert outcome.status == "failure"
    assert rec.final("ship").status == "error"
    assert "cluster 'staging' is not available to this build (its clusters: prod-eu)" in rec.text("ship")


async def test_a_candidate_from_a_private_registry_gets_a_pull_secret_created_in_the_namespace(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any, registry: Any
) -> None:
    cluster.create("shop", busybox_image)
    private = f"{registry.domain}/shop:2"
    env = {**dockerd.env, "DOCKER_CONFIG": str(tmp_path / "docker-config")}  # the login stays in this test

    def docker(*args: str, given: bytes | None = None) -> None:
        subprocess.run(["docker", *args], env=env, input=given, capture_output=True, timeout=120, check=True)

    docker("tag", busybox_image, private)
    docker("login", registry.domain, "-u", registry.username, "--password-stdin", given=registry.password.encode())
    docker("push", private)
    docker("rmi", private)  # the kubelet must pull it, with the secret
    access = RegistryAccess(name="corp-registry", domain=registry.domain, username=registry.username,
                            password=registry.password)  # fmt: skip
    registries = {"corp-registry": access}
    yaml = SERVICE_DEPLOY.replace("${{APP_IMAGE}}:${{CF_SHORT_REVISION}}", private)

    outcome, rec = await run_build(tmp_path, yaml, "local", dockerd, cluster.access, registries=registries)

    log = succeeded(outcome, rec, "ship")
    assert 'created pull secret "outpost-registry-corp-registry" for registry corp-registry' in log
    template = cluster.get("shop")["spec"]["template"]["spec"]
    assert template["imagePullSecrets"] == [{"name": "outpost-registry-corp-registry"}]
    assert cluster.running_images("shop") == [private]
    assert registry.password not in log


KUBECTL = """version: '1.0'
steps:
  look:
    image: alpine
    commands:
      - kubectl config current-context
      - kubectl get deploy
      - test "$(stat -c %a "$KUBECONFIG")" = 600
      - echo "kubeconfig at $KUBECONFIG"
      - grep token "$KUBECONFIG"
"""


async def test_a_freestyle_step_runs_kubectl_get_deploy_with_the_integrations_context(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any
) -> None:
    need(shutil.which("kubectl") is not None, "kubectl is not installed (apt-get install kubernetes-client)")
    cluster.create("shop", busybox_image)

    outcome, rec = await run_build(tmp_path, KUBECTL, "local", dockerd, cluster.access)

    log = succeeded(outcome, rec, "look")
    lines = log.splitlines()
    assert lines[0] == "prod-eu"
    assert any(line.split()[:1] == ["shop"] for line in lines), log  # kubectl's table, the deployment's row
    assert TOKEN not in log  # masked, even as the step printed it
    assert "token: *****" in log
    kubeconfig = Path(next(line for line in lines if line.startswith("kubeconfig at ")).split(" at ")[1])
    assert not kubeconfig.exists()  # removed after the step
    assert not kubeconfig.is_relative_to(tmp_path / "volume")
    assert all(TOKEN not in p.read_text(errors="replace") for p in (tmp_path / "volume").rglob("*") if p.is_file())


async def test_a_docker_step_reads_the_kubeconfig_mounted_read_only(
    tmp_path: Path, cluster: Deployments, busybox_image: str, dockerd: Any
) -> None:
    yaml = f"""version: '1.0'
steps:
  look:
    image: {busybox_image}
    commands:
      - grep current-context "$KUBECONFIG"
      - if echo x >> "$KUBECONFIG"; then echo writable; fi
"""
    outcome, rec = await run_build(tmp_path, yaml, "docker", dockerd, cluster.access)

    log = succeeded(outcome, rec, "look")
    assert "current-context: prod-eu" in log
    assert "writable" not in log
    assert not list((tmp_path / "scratch").glob("step-*"))  # the step's folder went with it


async def test_a_deploy_step_to_a_cluster_it_cannot_reach_ends_with_the_address_and_never_the_token(
    tmp_path: Path,
) -> None:
    closed = ClusterAccess(name="prod-eu", server="http://127.0.0.1:1", token=TOKEN, namespace=NAMESPACE)
    outcome, rec = await run_build(tmp_path, SERVICE_DEPLOY, "local", None, closed, variables={"APP_IMAGE": "x"})

    assert outcome.status == "failure"
    final = rec.final("ship")
    assert final.status == "error"
    assert "cannot reach cluster 'prod-eu' at http://127.0.0.1:1" in (final.message or "")
    assert TOKEN not in rec.text("ship") + (final.message or "")


async def test_a_cluster_whose_token_is_a_runner_secret_this_runner_lacks_is_named_with_the_secret(
    tmp_path: Path,
) -> None:
    kept = ClusterAccess(name="prod-eu", server="http://127.0.0.1:1", runner_secret="PROD_EU_TOKEN")
    outcome, rec = await run_build(tmp_path, SERVICE_DEPLOY, "local", None, kept, variables={"APP_IMAGE": "x"})

    assert outcome.status == "failure"
    assert "keeps its token in runner secret 'PROD_EU_TOKEN', which this runner does not have" in rec.text("ship")


async def test_a_kubernetes_step_pod_gets_the_kubeconfig_in_a_file_of_its_own_and_a_deploy_step_runs_beside_it(
    cluster: Deployments, busybox_image: str, dockerd: Any
) -> None:
    dockerd.cli("tag", busybox_image, "outpost-shop:3")
    cluster.create("shop", busybox_image)
    yaml = f"""version: '1.0'
steps:
  look:
    image: {busybox_image}
    commands:
      - grep current-context "$KUBECONFIG"
      - stat -c '%a %n' "$KUBECONFIG"
      - test -z "$OUTPOST_KUBECONFIG_CONTENT"
      - grep token "$KUBECONFIG"
  ship:
    type: deploy
    kind: kubernetes
    cluster: prod-eu
    service: shop
    candidate:
      image: outpost-shop:3
"""
    outcome, rec = await run_build(Path("."), yaml, "kubernetes", dockerd, cluster.access, kube=cluster.cluster)

    log = rec.text("look")
    assert outcome == BuildOutcome("success"), log + rec.text("ship")
    assert "current-context: prod-eu" in log
    assert "600 /tmp/outpost-kubeconfig" in log or "600 /dev/shm/outpost-kubeconfig" in log  # the pod's, not the volume
    assert "token: *****" in log
    assert 'deployment "shop" rolled out: revision 2' in rec.text("ship")
