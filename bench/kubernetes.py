"""Kubernetes executor benchmark, on the test cluster (tests/kube/: the API server emulator, its scheduler and fake
kubelets running pods on a Docker engine of its own). These are figures of the emulator, not of a real cluster: a
real API server, scheduler, kubelet and container runtime add their own latencies (see docs/kubernetes.md).

- start: from `run()` being called to the step pod seen `Running` by a watch of the bench's own (the Secret, the pod,
  the scheduler's binding, the kubelet's image check, container create and start, and its status write), and to the
  step's first output line in the executor's output callback (the output file is read every 0.2 s);
- step: a whole `run()` of `true` (then the pod's deletion, waited for until it is gone), against the Docker
  executor's `run()` of the same step on the same engine.

    .venv/bin/python bench/kubernetes.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
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
from tests.kube.cluster import Cluster  # noqa: E402

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


def report(times: dict[str, list[float]], runs: int, warmups: int, load: tuple[float, float]) -> str:
    rows = {
        "running": "start: `run()` called → step pod `Running` (seen by a watch)",
        "first_output": "start: `run()` called → the step's first output line delivered",
        "k8s_step": "step: `run()` of `true`, Kubernetes executor (create → exit → pod gone)",
        "docker_step": "step: `run()` of `true`, Docker executor, same engine",
    }
    lines = [
        "## Kubernetes executor: step start and per-step overhead on the test cluster (not a real cluster)",
        "",
        "- **Command**: `.venv/bin/python bench/kubernetes.py --write docs/benchmarks.md`: "
        f"{runs} measured repetitions after {warmups} warm-ups; the test cluster of `tests/kube/` (API server "
        "emulator on loopback, fake scheduler, fake kubelets) running pods on a `dockerd` of its own, the executor "
        "in-process through lightkube.",
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
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outpost-bench-k8s-") as folder:
        engine = Dockerd(Path(folder) / "docker").start()
        cluster: Cluster | None = None
        try:
            image = make_busybox_image(engine)
            cluster = Cluster(Path(folder) / "cluster", str(engine.socket)).start()
            before = machine.load_average()
            times = asyncio.run(measure(cluster, engine, image, args.runs, args.warmups))
            section = report(times, args.runs, args.warmups, (before, machine.load_average()))
        finally:
            if cluster is not None:
                cluster.stop()
            engine.stop()
    print(section)
    if args.write:
        write_section(args.write, section, "bench/kubernetes.py")


if __name__ == "__main__":
    main()
