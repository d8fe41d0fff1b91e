"""The Kubernetes executor's privileged Docker-in-Docker opt-in on the test cluster: one privileged pod per build
running a real dockerd (on the tests' real Docker engine), build and push steps through it into a real registry,
freestyle steps' `docker` commands against it; without the opt-in no such pod is ever made."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from outpost.errors import ExecutorError
from outpost.executors.base import Executor, ImageBuildJob, PushJob, StepJob
from tests import containers
from tests.kube import fixtures

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry
kube_cluster, dind_image = fixtures.kube_cluster, fixtures.dind_image

pytestmark = pytest.mark.timeout(180)

NODE = "node-b"  # the runner's node: the build's pods share it (the daemon's socket is on the build volume)


class Build:
    def __init__(self, cluster: Any, **options: str) -> None:
        self.cluster, self.options = cluster, options
        self.build_id = f"d{uuid.uuid4().hex[:8]}"
        self.out = bytearray()

    @property
    def volume(self) -> Path:
        return Path(self.cluster.claim_folder()) / "builds" / self.build_id / "volume"

    def executor(self) -> Executor:
        from outpost.executors.kubernetes.executor import KubernetesExecutor

        self.volume.mkdir(parents=True, exist_ok=True)
        options = self.cluster.executor_options(node=NODE, **self.options)
        return KubernetesExecutor(self.volume, self.volume.parent / "scratch", build_id=self.build_id, options=options)

    async def sink(self, chunk: bytes) -> None:
        self.out.extend(chunk)

    def step(self, script: str, image: str) -> StepJob:
        return StepJob(step="docker cli", script=script, env={}, workdir=self.volume, image=image)

    def pods_made(self) -> list[dict[str, Any]]:
        """Every pod of this build the API server was given (as created)."""
        return [
            p
            for _, kind, plural, p in list(self.cluster.store.history)
            if plural == "pods" and kind == "ADDED" and p["metadata"]["labels"].get("outpost.io/build") == self.build_id
        ]

    def pods_left(self) -> list[dict[str, Any]]:
        return [p for p in self.cluster.pods() if p["metadata"]["labels"].get("outpost.io/build") == self.build_id]


def _context(volume: Path) -> Path:
    """An app whose Dockerfile has RUN lines (run by the daemon in the pod, not by the runner)."""
    context = volume / "app"
    context.mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN echo built-inside-dind > /proof && cat /proof\n"
    )
    return context


async def test_build_push_and_docker_commands_of_a_build_go_through_its_one_privileged_dind_pod(
    kube_cluster: Any, dind_image: str, registry: Any, dockerd: Any
) -> None:
    from outpost.containers.auth import RegistryAuth

    build = Build(kube_cluster, docker_in_docker="true", dind_image=dind_image)
    context = _context(build.volume)
    login = RegistryAuth(registry.domain, str(registry.username), str(registry.password), insecure=True)
    target = f"{registry.domain}/acme/app:1"
    async with build.executor() as executor:
        built = await executor.build_image(
            ImageBuildJob(step="image", context=context, tags=["acme/app:1"]), build.sink
        )
        assert b"built-inside-dind" in build.out  # the RUN line ran, in the daemon's container
        assert built.image_id.startswith("sha256:")
        assert built.reference == "acme/app:1"
        digest = await executor.push_image(PushJob("push", built.reference, [target], login), build.sink)
        script = (
            "docker version --format '{{.Server.Version}}'\n"
            "docker images --format '{{.ID}} {{.Repository}}'\n"
            "echo from-the-step > /codefresh/volume/note\n"  # the daemon sees the build volume where steps do
            "docker run --rm -v /codefresh/volume:/v acme/app:1 cat /v/note /proof\n"
        )
        code = await executor.run(build.step(script, image=dind_image), build.sink)
        assert code == 0, build.out
        dind_pods = [p for p in build.pods_made() if p["metadata"]["labels"]["outpost.io/step"] == "docker-in-docker"]
    assert registry.digest("acme/app", "1") == digest  # the tag landed, under the digest the push reported
    assert digest.startswith("sha256:")
    log = bytes(build.out).decode()
    assert "20.10" in log  # the step's docker CLI reached the daemon's server...
    assert f"{built.image_id.removeprefix('sha256:')[:12]} acme/app" in log  # ...and sees the built image
    assert "from-the-step\nbuilt-inside-dind\n" in log  # a container of it, with the build volume mounted
    assert dockerd.api("GET", "/images/acme/app:1/json").status_code == 404  # built in the pod, not by the node's
    (pod,) = dind_pods  # one daemon for the build, its steps and the push
    assert pod["spec"]["containers"][0]["securityContext"]["privileged"] is True
    assert pod["spec"]["nodeName"] == NODE
    # The registry's password travelled only in the Docker API's header: no pod spec and no Secret holds it.
    specs = json.dumps(build.pods_made()) + json.dumps(kube_cluster.objects("secrets"))
    assert str(registry.password) not in specs
    assert str(registry.password) not in log
    assert build.pods_left() == []  # the daemon's pod went with the build
    assert not (build.volume / ".outpost-steps").exists()


async def test_without_the_opt_in_no_dind_pod_is_made_and_steps_get_no_docker_host(
    kube_cluster: Any, busybox_image: str
) -> None:
    build = Build(kube_cluster)
    async with build.executor() as executor:
        code = await executor.run(build.step('echo "host=[${DOCKER_HOST:-}]"\n', image=busybox_image), build.sink)
        with pytest.raises(ExecutorError, match="need --builder-image"):  # builder pods as before, not a daemon
            await executor.build_image(ImageBuildJob(step="image", context=build.volume, tags=["a:1"]), build.sink)
    assert code == 0
    assert b"host=[]" in build.out
    made = build.pods_made()
    assert [p["metadata"]["labels"]["outpost.io/step"] for p in made] == ["docker-cli"]
    assert all(not (c.get("securityContext") or {}).get("privileged") for p in made for c in p["spec"]["containers"])


async def test_a_dind_image_without_dockerd_fails_the_step_with_the_daemon_s_words(
    kube_cluster: Any, busybox_image: str
) -> None:
    build = Build(kube_cluster, docker_in_docker="true", dind_image=busybox_image, pending_timeout="20")
    async with build.executor() as executor:
        with pytest.raises(ExecutorError, match=r"the Docker-in-Docker daemon ended: .*dockerd: not found"):
            await executor.run(build.step("docker version\n", image=busybox_image), build.sink)
        assert build.pods_left() == []  # the failed daemon's pod is gone at once, not left for the next step
    assert b"starting the build's privileged Docker-in-Docker pod" in build.out
    assert [p["metadata"]["labels"]["outpost.io/step"] for p in build.pods_made()] == ["docker-in-docker"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"docker_in_docker": "true", "node": "n"}, "--docker-in-docker needs --dind-image"),
        ({"docker_in_docker": "true", "dind_image": "dind:1"}, "--docker-in-docker needs --node-name"),
    ],
)
def test_an_opt_in_that_cannot_work_is_refused_with_what_to_set(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    fixtures.need_kubernetes_packages()
    from outpost.executors.kubernetes.executor import KubernetesExecutor

    with pytest.raises(ExecutorError, match=message):
        KubernetesExecutor(tmp_path, tmp_path, build_id="b", options=options)


def test_the_dind_pod_is_a_valid_privileged_pod() -> None:
    fixtures.need_kubernetes_packages()
    import kubernetes_validate

    from outpost.executors.kubernetes import dind, objects

    pod = objects.step_pod(
        objects.StepPodSpec(
            name="op-b-1-docker-in-docker",
            namespace="builds",
            build_id="b",
            step=dind.STEP,
            image="registry.corp/tools/dind:20.10",
            command=["/bin/sh", "-c", dind.daemon_script(10001)],
            claim="outpost-work",
            volume_path="builds/b/volume",
            volume_mount="/codefresh/volume",
            node_name="node-a",
            security=objects.dind_security(),
        )
    ).to_dict()
    kubernetes_validate.validate(pod, "1.37", strict=True)
    assert pod["spec"]["containers"][0]["securityContext"] == {
        "privileged": True,
        "runAsUser": 0,
        "runAsNonRoot": False,
    }
    assert "--group 10001" in pod["spec"]["containers"][0]["command"][2]  # the runner's group may use the socket
