"""Kubernetes executor benchmark, on the test cluster (tests/kube/: the API server emulator, its scheduler and fake
kubelets running pods on a Docker engine of its own). These are figures of the emulator, not of a real cluster: a
real API server, scheduler, kubelet and container runtime add their own latencies (see docs/kubernetes.md).

- start: from `run()` being called to the step pod seen `Running` by a watch of the bench's own (the Secret, the pod,
  the scheduler's binding, the kubelet's image check, container create and start, and its status write), and to the
  step's first output line in the executor's output callback (the output file is read every 0.2 s);
- step: a whole `run()` of `true` (then the pod's deletion, waited for until it is gone), against the Docker
  executor's `run()` of the same step on the same engine;
- builds, engine in the runner against engine in an engine pod (`--engine-image`): a real control plane and a real
  `outpost runner start --executor kubernetes` process, with and without `--engine-image` (by default the engine test
  image, built as tests/kube/fixtures.py builds it: this machine's Python and Outpost); a five-step pipeline of
  `true`. Build start: the build's creation requested (POST) → its first step pod `Running`; per step: one step pod
  `Running` → the next one's (the step's end seen, its pod removed, its report, the next pod made and started).

    .venv/bin/python bench/kubernetes.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test cluster lives in tests/

from tests.containers import Dockerd, make_busybox_image  # noqa: E402
from tests.e2e.processes import ControlPlane, RunnerProcess  # noqa: E402
from tests.kube.cluster import Cluster  # noqa: E402
from tests.kube.fixtures import build_engine_image  # noqa: E402

import machine  # noqa: E402
from mdsection import write_section  # noqa: E402
from outpost.executors.base import Executor, StepJob  # noqa: E402
from outpost.executors.docker import DockerExecutor  # noqa: E402
from outpost.executors.kubernetes.executor import KubernetesExecutor  # noqa: E402
from samples import summarize  # noqa: E402


async def _run(executor: Executor, script: str, image: str, on_output: Callable[[], None]) -> int:
    async def sink(chunk: bytes) -> None:
        on_output()

    job = StepJob(step="bench", script=script, env={"A": "1"}, workdir=executor.volume, image=image)
    return await executor.run(job, sink)


def _note(first: list[float]) -> None:
    if not first:
        first.append(time.perf_counter())


async def measure(cluster: Cluster, engine: Dockerd, image: str, runs: int, warmups: int) -> dict[str, list[float]]:
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import Pod

    times: dict[str, list[float]] = {"running": [], "first_output": [], "k8s_step": [], "docker_step": []}
    running_at: dict[str, float] = {}

    async def follow() -> None:
        async with AsyncClient(KubeConfig.from_file(cluster.kubeconfig), namespace="builds") as admin:
            async for _, pod in admin.watch(Pod):
                if pod.status and pod.status.phase == "Running" and pod.metadata:
                    running_at.setdefault(str(pod.metadata.name), time.perf_counter())

    watcher = asyncio.create_task(follow())
    root = cluster.claim_folder()
    build = f"bench{uuid.uuid4().hex[:6]}"
    volume = root / "builds" / build / "volume"
    volume.mkdir(parents=True)
    k8s = KubernetesExecutor(volume, root / "builds" / build / "scratch", build_id=build,
                             options=cluster.executor_options())  # fmt: skip
    docker = DockerExecutor(
        volume, root / "builds" / build / "scratch", build_id=build, options={"docker_host": engine.host}
    )
    async with k8s, docker:
        for i in range(warmups + runs):
            keep = i >= warmups
            first: list[float] = []
            began = time.perf_counter()
            await _run(k8s, "echo up\n", image, partial(_note, first))
            name = max(running_at, key=running_at.__getitem__) if running_at else None
            if keep and name is not None and first:
                times["running"].append(running_at[name] - began)
                times["first_output"].append(first[0] - began)
            began = time.perf_counter()
            await _run(k8s, "true\n", image, lambda: None)
            if keep:
                times["k8s_step"].append(time.perf_counter() - began)
            began = time.perf_counter()
            await _run(docker, "true\n", image, lambda: None)
            if keep:
                times["docker_step"].append(time.perf_counter() - began)
    watcher.cancel()
    return times


STEPS = 5
ENGINE_LABEL, STEP_LABEL = "outpost.io/engine", "outpost.io/step"


def _pipeline(image: str) -> str:
    steps = "".join(f"  s{i}:\n    image: {image}\n    commands:\n      - 'true'\n" for i in range(1, STEPS + 1))
    return f"version: '1.0'\nsteps:\n{steps}"


async def _build_once(
    control_plane: ControlPlane, pipeline: str, running_at: dict[str, tuple[float, dict[str, str]]]
) -> tuple[float, list[float]]:
    """One build of `pipeline`: (request → first step pod Running, [step pod Running → next step pod Running])."""
    import httpx

    async with httpx.AsyncClient(
        base_url=control_plane.url + "/api/v1", headers={"Authorization": f"Bearer {control_plane.token}"}, timeout=30
    ) as api:
        began = time.perf_counter()
        answer = await api.post(f"/pipelines/{pipeline}/builds", json={"variables": {}})
        answer.raise_for_status()
        build = str(answer.json()["id"])
        deadline = began + 180
        status = ""
        while time.perf_counter() < deadline:  # bounded: a stuck build fails the bench, it does not hang it
            status = (await api.get(f"/builds/{build}")).json()["status"]
            if status in ("success", "failure", "error", "terminated"):
                break
            await asyncio.sleep(0.1)
    if status != "success":
        raise SystemExit(f"bench build {build} ended {status or 'not at all within 180 s'}: see the runner's log")
    steps = sorted(at for at, labels in running_at.values() if STEP_LABEL in labels and at >= began)
    if len(steps) != STEPS:
        raise SystemExit(f"bench build {build}: {len(steps)} step pods seen Running, {STEPS} expected")
    return steps[0] - began, [b - a for a, b in itertools.pairwise(steps)]


async def measure_builds(
    folder: Path, cluster: Cluster, image: str, engine_image: str, runs: int, warmups: int
) -> dict[str, list[float]]:
    """Builds through a real control plane and runner process, the engine in the runner, then in engine pods."""
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import Pod

    times: dict[str, list[float]] = {"runner_start": [], "runner_step": [], "engine_start": [], "engine_step": []}
    running_at: dict[str, tuple[float, dict[str, str]]] = {}

    async def follow() -> None:
        async with AsyncClient(KubeConfig.from_file(cluster.kubeconfig), namespace="builds") as admin:
            async for _, pod in admin.watch(Pod):
                if pod.status and pod.status.phase == "Running" and pod.metadata and pod.metadata.uid:
                    running_at.setdefault(pod.metadata.uid, (time.perf_counter(), dict(pod.metadata.labels or {})))

    control_plane = ControlPlane(folder / "control-plane")
    control_plane.folder.mkdir(parents=True)
    watcher = asyncio.create_task(follow())
    try:
        control_plane.start()
        tokens = {mode: control_plane.install_token() for mode in ("runner", "engine")}  # makes the runtime first
        with control_plane.api() as api:
            api.post("/pipelines", json={"name": "five", "yaml": _pipeline(image)}).raise_for_status()
        claim = cluster.claim_folder()
        for mode, extra in (("runner", []), ("engine", ["--engine-image", engine_image])):
            runner = RunnerProcess(
                control_plane.folder, control_plane.url, tokens[mode],
                "--executor", "kubernetes", "--kubeconfig", str(cluster.runner_kubeconfig), "--namespace", "builds",
                "--work-claim", "outpost-work", "--work-claim-path", str(claim), "--data-dir", str(claim / mode),
                *extra, name=mode,
            )  # fmt: skip
            runner.start()
            try:
                for i in range(warmups + runs):
                    start, steps = await _build_once(control_plane, "five", running_at)
                    if i >= warmups:
                        times[f"{mode}_start"].append(start)
                        times[f"{mode}_step"].extend(steps)
                    if mode == "engine":  # the first step of the next build must not find this engine pod
                        await _engine_pods_gone(cluster)
            finally:
                runner.stop()
    finally:
        watcher.cancel()
        control_plane.stop()
    return times


async def _engine_pods_gone(cluster: Cluster) -> None:
    from lightkube import AsyncClient, KubeConfig
    from lightkube.resources.core_v1 import Pod

    async with AsyncClient(KubeConfig.from_file(cluster.kubeconfig), namespace="builds") as admin:
        for _ in range(300):  # at most 30 s
            pods = [pod async for pod in admin.list(Pod)]
            if not any(pod.metadata and ENGINE_LABEL in (pod.metadata.labels or {}) for pod in pods):
                return
            await asyncio.sleep(0.1)
    raise SystemExit("an engine pod was still there 30 s after its build ended")


def report(times: dict[str, list[float]], runs: int, warmups: int, load: tuple[float, float], builds: int = 0) -> str:
    rows = {
        "running": "start: `run()` called → step pod `Running` (seen by a watch)",
        "first_output": "start: `run()` called → the step's first output line delivered",
        "k8s_step": "step: `run()` of `true`, Kubernetes executor (create → exit → pod gone)",
        "docker_step": "step: `run()` of `true`, Docker executor, same engine",
        "runner_start": "build start: build requested → first step pod `Running`, engine in the runner",
        "engine_start": "build start: build requested → first step pod `Running`, engine in an engine pod",
        "runner_step": "per step: step pod `Running` → next step pod `Running`, engine in the runner",
        "engine_step": "per step: step pod `Running` → next step pod `Running`, engine in an engine pod",
    }
    lines = [
        "## Kubernetes executor: step start and per-step overhead on the test cluster (not a real cluster)",
        "",
        "- **Command**: `.venv/bin/python bench/kubernetes.py --write docs/benchmarks.md`: "
        f"{runs} measured repetitions after {warmups} warm-ups; the test cluster of `tests/kube/` (API server "
        "emulator on loopback, fake scheduler, fake kubelets) running pods on a `dockerd` of its own, the executor "
        "in-process through lightkube. The build rows: a real control plane and `outpost runner start --executor "
        f"kubernetes` process, without and with `--engine-image` (the engine test image of `tests/kube/fixtures.py`), "
        f"{builds} measured builds each after {warmups} warm-ups of a pipeline of {STEPS} steps running `true`; "
        "per-step figures are the intervals between a build's consecutive step pods.",
        "- **What these are not**: real-cluster figures. A real API server (etcd, admission), kube-scheduler, kubelet "
        "(pod sandbox, CNI, volume mounts) and container runtime each add latency that is not here.",
        "",
        "| Machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.describe()],
        f"| Load average (1 min) | {load[0]:.2f} before, {load[1]:.2f} after |",
        "",
        "| Measure | n | median (ms) | p90 (ms) |",
        "|---|--:|--:|--:|",
    ]
    for key, title in rows.items():
        summary = summarize([t * 1000 for t in times[key]])
        if summary:
            lines.append(f"| {title} | {summary.n} | {summary.p50:.0f} | {summary.p90:.0f} |")
    starts = summarize(times.get("runner_start", [])), summarize(times.get("engine_start", []))
    steps = summarize(times.get("runner_step", [])), summarize(times.get("engine_step", []))
    if starts[0] and starts[1] and steps[0] and steps[1]:
        lines += [
            "",
            f"An engine pod adds {(starts[1].p50 - starts[0].p50) * 1000:.0f} ms to a build's start (medians, "
            f"{starts[1].p50 * 1000:.0f} against {starts[0].p50 * 1000:.0f} ms): the engine pod's Secret and pod, "
            "its scheduling and start on the test cluster (the image already on the node), Python and Outpost "
            "starting in it, and its own `started` call to the control plane before it creates the first step pod. "
            f"Per step it costs {steps[1].p50 * 1000:.0f} ms against {steps[0].p50 * 1000:.0f} ms in the runner: "
            "the same executor code, in another process. On a real cluster the engine pod's image pull (the first "
            "time on a node) and its sandbox start add time that is not here.",
        ]
        if max(load) > (os.cpu_count() or 1):
            lines[-1] += (
                " The machine was busy with other work while this ran (load average above its core count, in the "
                "machine table): the engines, the runner, the cluster and the control plane shared its cores with "
                "it, so read the medians, and the p90s as noise."
            )
    k8s, docker = summarize(times["k8s_step"]), summarize(times["docker_step"])
    if k8s and docker:
        lines += [
            "",
            f"A step costs the Kubernetes executor {k8s.p50 * 1000:.0f} ms against {docker.p50 * 1000:.0f} ms for the "
            "Docker executor on the same engine (medians): the Secret, the pod, the scheduler's binding and the "
            "kubelet's status writes go through the API and a watch, the output is read from a file every 0.2 s, and "
            "the step ends only once its pod is gone. The first output line can arrive before a watch sees the pod "
            "`Running`: the container writes before the kubelet has reported it started. On a real cluster, pod "
            "start-up (sandbox, network, volume attach) adds time of its own, not measured here.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--builds", type=int, default=8, help="measured builds per engine placement")
    parser.add_argument("--engine-image", help="the engine pods' image (default: build the engine test image)")
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outpost-bench-k8s-") as folder:
        engine = Dockerd(Path(folder) / "docker").start()
        cluster: Cluster | None = None
        try:
            image = make_busybox_image(engine)
            cluster = Cluster(Path(folder) / "cluster", str(engine.socket)).start()
            engine_image = args.engine_image or build_engine_image(engine)
            before = machine.load_average()
            times = asyncio.run(measure(cluster, engine, image, args.runs, args.warmups))
            times |= asyncio.run(measure_builds(Path(folder), cluster, image, engine_image, args.builds, args.warmups))
            section = report(times, args.runs, args.warmups, (before, machine.load_average()), args.builds)
        finally:
            if cluster is not None:
                cluster.stop()
            engine.stop()
    print(section)
    if args.write:
        write_section(args.write, section, "bench/kubernetes.py")


if __name__ == "__main__":
    main()
