"""The Kubernetes executor on the test cluster (API server emulator, fake scheduler, fake kubelets running pods on
the tests' real Docker engine): failures end the step with a reason a user understands, never as a success, and
API faults (errors, throttling, cut watches, 410 Gone) lose no output and run no step twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from outpost.errors import ExecutorError
from outpost.executors.base import Executor, StepJob
from tests import containers
from tests.components import sleeping
from tests.kube import fixtures

dockerd, busybox_image, registry = containers.dockerd, containers.busybox_image, containers.registry
open_registry = containers.open_registry
kube_cluster, buildah_image = fixtures.kube_cluster, fixtures.buildah_image

pytestmark = pytest.mark.timeout(120)


@dataclass
class Build:
    cluster: Any
    image: str
    options: dict[str, str] = field(default_factory=dict)
    build_id: str = field(default_factory=lambda: f"k{uuid.uuid4().hex[:8]}")

    def folder(self) -> Any:
        return self.cluster.claim_folder() / "builds" / self.build_id

    def executor(self) -> Executor:
        from outpost.executors.kubernetes.executor import KubernetesExecutor

        (self.folder() / "volume").mkdir(parents=True, exist_ok=True)
        options = self.cluster.executor_options(**self.options)
        return KubernetesExecutor(
            self.folder() / "volume", self.folder() / "scratch", build_id=self.build_id, options=options
        )

    def job(self, script: str, image: str | None = None) -> StepJob:
        return StepJob(
            step="unit tests", script=script, env={}, workdir=self.folder() / "volume", image=image or self.image
        )

    async def run(self, script: str, image: str | None = None) -> tuple[int | ExecutorError, bytes]:
        out = bytearray()

        async def sink(chunk: bytes) -> None:
            out.extend(chunk)

        async with self.executor() as executor:
            try:
                return await executor.run(self.job(script, image), sink), bytes(out)
            except ExecutorError as exc:
                return exc, bytes(out)


@pytest.fixture
def build(kube_cluster: Any, busybox_image: str) -> Build:
    return Build(kube_cluster, busybox_image)


def build_pods(build: Build) -> list[dict[str, Any]]:
    return [p for p in build.cluster.pods() if p["metadata"]["labels"].get("outpost.io/build") == build.build_id]


async def test_an_image_that_cannot_be_pulled_fails_the_step_after_the_pull_timeout(build: Build) -> None:
    build.options["pull_timeout"] = "2"
    result, out = await build.run("echo never\n", image="127.0.0.1:1/nothing/here:1")
    assert isinstance(result, ExecutorError)
    assert "image 127.0.0.1:1/nothing/here:1 could not be pulled for 2s" in str(result)
    assert b"[outpost] image 127.0.0.1:1/nothing/here:1 could not be pulled" in out
    assert b"never" not in out
    assert build_pods(build) == []


async def test_an_invalid_image_name_fails_the_step_at_once(build: Build) -> None:
    build.options["pull_timeout"] = "300"  # not waited for
    result, out = await build.run("echo never\n", image="Team/App:1")
    assert isinstance(result, ExecutorError)
    assert "invalid reference format" in str(result)
    assert b"image Team/App:1" in out


async def test_a_pod_no_node_can_take_fails_the_step_after_the_pending_timeout_with_the_scheduler_s_words(
    build: Build,
) -> None:
    build.options.update(step_pods=json.dumps({"nodeSelector": {"disk": "floppy"}}), pending_timeout="2")
    result, out = await build.run("echo never\n")
    assert isinstance(result, ExecutorError)
    assert "no node could take the pod of step unit tests within 2s" in str(result)
    assert b"didn't match Pod's node affinity/selector" in out
    assert b"FailedScheduling: 0/3 nodes are available" in out  # the pod's warning event, in the step's log


async def test_step_pods_go_where_the_runner_s_step_pod_settings_say_with_their_resources(build: Build) -> None:
    build.cluster.taint("node-c", "dedicated", "builds")  # only pods that tolerate it may go there
    wanted = {"nodeSelector": {"disk": "hdd"}, "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}}
    build.options.update(step_pods=json.dumps(wanted), pending_timeout="2")
    refused, out = await build.run("echo never\n")
    assert isinstance(refused, ExecutorError)  # node-c is the only hdd node, and its taint is not tolerated
    assert b"had untolerated taints" in out

    tolerating = {"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"}
    build.options["step_pods"] = json.dumps({**wanted, "tolerations": [tolerating]})
    quota = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us"  # cgroup v2 or v1
    code, out = await build.run(f"echo placed\n{quota}\n")
    assert code == 0, out
    assert out.split()[:2] == [b"placed", b"100000"]  # a limit of 1 CPU (100 ms per 100 ms), set in the kernel
    history = list(build.cluster.store.history)
    (pod,) = [p for _, kind, plural, p in history if plural == "pods" and kind == "ADDED"][1:]
    assert pod["spec"]["nodeSelector"] == {"disk": "hdd"}
    assert pod["spec"]["tolerations"] == [tolerating]
    assert pod["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}
    name = pod["metadata"]["name"]
    assert {
        p["spec"].get("nodeName") for _, _, kind, p in history if kind == "pods" and p["metadata"]["name"] == name
    } == {
        None,
        "node-c",
    }


async def test_a_step_past_its_memory_limit_fails_as_oomkilled(build: Build) -> None:
    build.options["step_pods"] = json.dumps({"resources": {"limits": {"memory": "32Mi"}}})
    result, out = await build.run("set -e\necho before\ndd if=/dev/zero of=/dev/null bs=128M count=1\necho after\n")
    assert isinstance(result, ExecutorError)
    assert "OOMKilled" in str(result)
    assert out.startswith(b"before\n")
    assert b"after" not in out


async def test_a_pod_deleted_from_outside_fails_the_step_and_never_passes(build: Build) -> None:
    marker = build.folder() / "volume" / "started"
    running = asyncio.create_task(build.run("touch /codefresh/volume/started\nsleep 300\necho done\n"))
    async with asyncio.timeout(60):
        while not marker.exists():
            await asyncio.sleep(0.05)
    (pod,) = build_pods(build)
    build.cluster.delete_pod(pod["metadata"]["name"], grace=1)
    result, out = await running
    assert isinstance(result, ExecutorError)
    assert "was deleted from outside" in str(result)
    assert b"deleted from outside" in out
    assert b"done" not in out


async def test_server_errors_and_throttling_lose_no_output_and_run_no_step_twice(build: Build) -> None:
    store = build.cluster.store
    script = "for i in $(seq 1 200); do echo line $i; done\nsleep 1\necho last words\nexit 7\n"

    async def faults() -> None:
        for status in (500, 429, 503):
            build.cluster.call(_async(lambda s=status: store.faults.fail(2, s)))
            await asyncio.sleep(0.3)

    injecting = asyncio.create_task(faults())
    result, out = await build.run(script)
    await injecting
    assert result == 7
    assert out.decode().splitlines() == [f"line {i}" for i in range(1, 201)] + ["last words"]
    assert store.faults.failed >= 4
    created = [e for e in list(store.history) if e[1] == "ADDED" and e[2] == "pods"]
    assert [e[3]["metadata"]["labels"]["outpost.io/build"] for e in created].count(build.build_id) == 1


async def test_a_cut_watch_and_a_410_gone_lose_no_output_and_no_verdict(build: Build) -> None:
    store = build.cluster.store
    marker = build.folder() / "volume" / "started"
    running = asyncio.create_task(build.run("echo one\ntouch /codefresh/volume/started\nsleep 2\necho two\nexit 3\n"))
    async with asyncio.timeout(60):
        while not marker.exists():
            await asyncio.sleep(0.05)

    async def compact_and_cut() -> None:
        store.compact()  # a watch resumed from before now gets 410 Gone
        store.faults.cut_watches()

    build.cluster.call(compact_and_cut)
    result, out = await running
    assert result == 3
    assert out == b"one\ntwo\n"


def _async(work: Any) -> Any:
    async def run() -> None:
        work()

    return run


async def test_a_restarted_runner_removes_the_pods_a_crashed_one_left_and_their_processes_end(build: Build) -> None:
    from outpost.executors.kubernetes.executor import KubernetesExecutor

    marker = build.folder() / "volume" / "started"
    seconds = str(300 + uuid.uuid4().int % 9000)
    executor = await build.executor().__aenter__()  # never left: the runner "crashed" mid-step
    running = asyncio.create_task(
        executor.run(build.job(f"touch /codefresh/volume/started\nsleep {seconds}\n"), _ignore)
    )
    async with asyncio.timeout(60):
        while not marker.exists():
            await asyncio.sleep(0.05)
    assert len(build_pods(build)) == 1

    options = build.cluster.executor_options()
    await asyncio.to_thread(
        KubernetesExecutor.after_crash, build.folder() / "volume", build.folder() / "scratch", build.build_id, options
    )

    assert build_pods(build) == []
    async with asyncio.timeout(30):
        while sleeping(seconds):
            await asyncio.sleep(0.1)
    with pytest.raises(ExecutorError):
        await running
    await executor.__aexit__(None, None, None)


async def test_a_restarted_runner_removes_at_start_what_an_earlier_run_of_it_left_even_without_its_folders(
    kube_cluster: Any, busybox_image: str
) -> None:
    from outpost.executors.kubernetes.executor import KubernetesExecutor

    seconds = str(300 + uuid.uuid4().int % 9000)
    crashed: dict[str, tuple[Build, Executor, asyncio.Task[int]]] = {}
    for runner in ("runner-a", "runner-b"):  # two runners sharing the work claim
        build = Build(kube_cluster, busybox_image, options={"runner_folder": runner})
        executor = await build.executor().__aenter__()  # never left: the runner "crashed" mid-step
        job = build.job(f"touch /codefresh/volume/started\nsleep {seconds}\n")
        crashed[runner] = (build, executor, asyncio.create_task(executor.run(job, _ignore)))
        async with asyncio.timeout(60):
            while not (build.folder() / "volume" / "started").exists():
                await asyncio.sleep(0.05)
    gone, kept = crashed["runner-a"][0], crashed["runner-b"][0]
    shutil.rmtree(gone.folder())  # its folders lost (a new claim, a wiped disk): nothing to find the build by

    said = await KubernetesExecutor.preflight(kube_cluster.executor_options(runner_folder="runner-a"))

    assert said is not None
    assert "removed 1 pod(s) an earlier run of this runner left" in said
    assert build_pods(gone) == []
    assert [s for s in kube_cluster.objects("secrets") if gone.build_id in str(s["metadata"]["labels"])] == []
    assert len(build_pods(kept)) == 1  # another runner's step goes on
    async with asyncio.timeout(30):
        while len(sleeping(seconds)) > 1:
            await asyncio.sleep(0.1)
    for _build, executor, running in crashed.values():
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, ExecutorError):
            await running
        await executor.__aexit__(None, None, None)
    assert build_pods(kept) == []


async def test_a_build_step_says_which_runner_setting_it_needs(build: Build) -> None:
    from outpost.executors.base import ImageBuildJob

    job = ImageBuildJob(step="image", context=build.folder() / "volume", tags=["acme/app:1"])
    async with build.executor() as executor:
        with pytest.raises(ExecutorError, match="need --builder-image: an image with buildah"):
            await executor.build_image(job, _ignore)
    build.options["builder_image"] = "buildah:1"
    async with build.executor() as executor:
        with pytest.raises(ExecutorError, match="need --scratch-registry"):
            await executor.build_image(job, _ignore)
    assert build_pods(build) == []


async def test_a_failing_dockerfile_fails_the_build_step_with_buildah_s_words_in_its_log(
    build: Build, buildah_image: str, open_registry: Any
) -> None:
    from outpost.executors.base import ImageBuildJob

    build.options.update(builder_image=buildah_image, scratch_registry=f"{open_registry.domain}/scratch")
    context = build.folder() / "volume" / "app"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    job = ImageBuildJob(step="image", context=context, tags=["acme/app:1"])
    async with build.executor() as executor:
        with pytest.raises(ExecutorError, match=r"the image build failed \(buildah exited with code"):
            await executor.build_image(job, sink)
    assert b"missing.txt" in out  # buildah's own explanation, read from the builder pod's output file
    assert build_pods(build) == []
    assert open_registry.catalog() == []  # nothing reached the scratch repository


async def test_a_step_s_services_run_as_pods_it_reaches_by_name_once_the_readiness_check_passes(build: Build) -> None:
    from outpost.executors.base import Readiness, ServiceSpec

    port = str(20000 + uuid.uuid4().int % 20000)  # pods share the host's network on the test cluster
    site = build.folder() / "volume" / "www"
    site.mkdir(parents=True)
    (site / "index.html").write_text("hello from the service\n")
    job = build.job(f"wget -q -O- http://web:{port}/index.html\n")
    job.services = [
        ServiceSpec(name="web", image=build.image, command=["httpd", "-f", "-p", port, "-h", "/codefresh/volume/www"])
    ]
    job.readiness = Readiness(image=build.image, script=f"wget -q -O /dev/null http://web:{port}/\n", period=0.5)
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    async with build.executor() as executor:
        assert await executor.run(job, sink) == 0, out
    assert b"[outpost] service web started" in out
    assert b"services ready (readiness check passed" in out
    assert out.endswith(b"hello from the service\n")
    assert build_pods(build) == []  # the service's pod went with the step


async def test_a_composition_fails_with_its_failing_candidate_s_code_and_leaves_no_service_running(
    build: Build,
) -> None:
    from outpost.executors.base import CompositionJob, ServiceSpec

    port = str(20000 + uuid.uuid4().int % 20000)
    (build.folder() / "volume" / "www").mkdir(parents=True)
    (build.folder() / "volume" / "www" / "index.html").write_text("up\n")
    web = ServiceSpec(name="web", image=build.image, command=["httpd", "-f", "-p", port, "-h", "/codefresh/volume/www"])
    ok = ServiceSpec(
        name="ok", image=build.image, command=["sh", "-c", f"wget -q -O /dev/null http://web:{port}/ && echo reached"]
    )
    broken = ServiceSpec(name="broken", image=build.image, command=["sh", "-c", "echo giving up; exit 4"])
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    job = CompositionJob(step="it", services=[web], candidates=[ok, broken])
    async with build.executor() as executor:
        code = await executor.compose(job, sink)
    assert code == 4, out
    assert b"[ok] reached\n" in out
    assert b"[broken] giving up\n" in out
    assert b"candidate broken exited with code 4" in out
    assert build_pods(build) == []


async def _ignore(chunk: bytes) -> None:
    return None


async def test_a_lost_node_fails_its_step_with_the_reason_and_the_pod_is_removed(build: Build) -> None:
    build.options["node_lost_timeout"] = "1"
    marker = build.folder() / "volume" / "started"
    running = asyncio.create_task(build.run("echo on the node\ntouch /codefresh/volume/started\nsleep 300\n"))
    async with asyncio.timeout(60):  # running, and reported so (a node lost before that is a pod that never started)
        while not (marker.exists() and [p for p in build_pods(build) if p["status"]["phase"] == "Running"]):
            await asyncio.sleep(0.05)
    (pod,) = build_pods(build)
    node = pod["spec"]["nodeName"]
    build.cluster.stop_kubelet(node)  # the node is gone: nothing reports on it any more

    async with asyncio.timeout(30):  # not the engine's timeout, nor a lease's: seconds after the node went silent
        result, out = await running
    assert isinstance(result, ExecutorError)
    assert f"the node {node} running step unit tests stopped answering for 1s (node lost)" in str(result)
    assert out.startswith(b"on the node\n")
    assert b"node lost" in out
    assert build_pods(build) == []


async def test_a_private_image_is_pulled_with_a_pull_secret_made_from_the_registry_integration(
    build: Build, dockerd: Any, registry: Any
) -> None:
    from outpost.containers.auth import RegistryAuth

    private = f"{registry.domain}/base/busybox:{uuid.uuid4().hex[:8]}"
    dockerd.cli("tag", build.image, private)
    dockerd.api("POST", f"/images/{private}/push", headers={"X-Registry-Auth": registry.docker_auth_header()})
    dockerd.cli("rmi", private)  # the kubelet must pull it, with the credentials
    build.options["pull_timeout"] = "2"

    anonymous, out = await build.run("echo pulled and ran\n", image=private)
    assert isinstance(anonymous, ExecutorError)
    assert b"could not be pulled" in out

    login = RegistryAuth(registry.domain, str(registry.username), str(registry.password), insecure=True)
    job = build.job("echo pulled and ran\n", image=private)
    job.auths = [login]
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    async with build.executor() as executor:
        assert await executor.run(job, sink) == 0
    assert bytes(out) == b"pulled and ran\n"
    assert build.cluster.objects("secrets") == []  # the pull secret went with its pod
    assert str(registry.password).encode() not in bytes(out)


async def test_a_step_s_raw_output_never_reaches_the_build_volume_and_the_next_step_sees_only_its_own_folder(
    build: Build,
) -> None:
    outputs = []
    looks = (
        "echo the-raw-output\n",
        "grep -rl the-raw-output /codefresh/volume || echo none on the volume\nls /codefresh/outpost/step\n",
    )
    async with build.executor() as executor:
        for script in looks:
            out = bytearray()

            async def sink(chunk: bytes, out: bytearray = out) -> None:
                out.extend(chunk)

            assert await executor.run(build.job(script), sink) == 0
            outputs.append(bytes(out))
    assert outputs[0] == b"the-raw-output\n"
    # The pod's own folder is on the work claim, mounted in it alone: its script and its output so far.
    assert outputs[1].split(b"\n") == [b"none on the volume", b"output", b"script", b""]
    assert list((build.folder() / "scratch" / "steps").iterdir()) == []  # each removed when its pod was gone
