"""Throughput: trivial builds a second through one control-plane process and R runners x C slots.

`outpost server` (SQLite, loopback) and R `outpost runner start --concurrency C` processes (local
executor). B builds of a one-step pipeline (`true`) are requested as fast as 8 client connections
allow; the figure is B divided by the time from the first request to the last build's end (as the
API reports it). Also: the server's CPU over that time (/proc/PID/stat), the most builds running at
once (sampled from the API), CPU ms per build of the server, the runners and their steps, and the
machine's load. With one runner, `--per-step N` then runs N builds of 20 `true` steps one at a time:
the per-step overhead is (last step's end - first step's start) / 20, from the runner's own timestamps.
Each runner's resident memory (VmRSS) is printed once it is online and idle, and again, idle, after the runs.
`--source DIR` runs server and runners from DIR/src (an older revision). Everything is bounded and
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import loopback
import machine
from idle_runners import CLK_TCK, cpu_seconds
from loopback import json_of
from processes import Processes, stop_on_signals
from waiting import BenchError

PIPELINE = "trivial"
YAML = "version: '1.0'\nsteps:\n  t:\n    image: alpine\n    commands:\n      - 'true'\n"
FINAL = {"success", "failure", "error", "terminated"}
IDLE_SETTLE = 3.0  # seconds a runner idles (its poll held) before its memory is read
STEPS = 20  # the per-step pipeline: this many `true` steps, one after the other
STEPPED = "steps"
STEPPED_YAML = "version: '1.0'\nsteps:\n" + "".join(
    f"  s{i}:\n    image: alpine\n    commands:\n      - 'true'\n" for i in range(STEPS)
)


def start(
    procs: Processes, workdir: Path, runners: int, concurrency: int, source: Path | None
) -> tuple[int, list[int], str, str]:
    env = {"PYTHONPATH": str(source / "src")} if source is not None else {}
    port, data = loopback.free_port(), workdir / "server"
    argv = [sys.executable, "-m", "outpost", "server", "--port", str(port), "--data-dir", str(data)]
    server = procs.start("outpost-server", argv, env=env)
    token_file = data / "admin-token"
    token = server.wait_for(lambda: token_file.read_text().strip() or None if token_file.is_file() else None, "token")
    url = f"http://127.0.0.1:{port}"
    pids = []
    with loopback.client(url, token=token) as api:
        server.wait_for(lambda: True if api.get("/api/v1/whoami").status_code == 200 else None, "the API")
        json_of(api.post("/api/v1/runtimes", json={"name": "bench"}))
        json_of(api.post("/api/v1/pipelines", json={"name": PIPELINE, "yaml": YAML, "runtime": "bench"}))
        json_of(api.post("/api/v1/pipelines", json={"name": STEPPED, "yaml": STEPPED_YAML, "runtime": "bench"}))
        for i in range(runners):
            install = json_of(api.post("/api/v1/runtimes/bench/install-tokens"))["install_token"]
            argv = [sys.executable, "-m", "outpost", "runner", "start", "--url", url, "--name", f"r{i}"]
            argv += ["--concurrency", str(concurrency), "--data-dir", str(workdir / f"r{i}")]
            pids.append(procs.start(f"runner-{i}", argv, env={**env, "OUTPOST_RUNNER_TOKEN": install}).proc.pid)

        def online() -> bool | None:
            rows = json_of(api.get("/api/v1/runners"))
            return True if sum(1 for r in rows if r["online"]) == runners else None

        server.wait_for(online, f"{runners} runners online")
    return server.proc.pid, pids, url, token


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchError(f"no VmRSS for process {pid}")


def runner_cpu(pid: int) -> tuple[float, float]:
    """The runner's own CPU seconds, and its reaped children's (the steps' shells): utime + stime, cutime + cstime."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


async def runner_calls(api: httpx.AsyncClient) -> dict[str, float]:
    """Runner protocol requests the server answered so far, by the last part of their route (poll, report, ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families((await api.get("/metrics")).text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "outpost_http_requests_total" and route.startswith("/api/runner/"):
                counts[route.rsplit("/", 1)[-1]] = counts.get(route.rsplit("/", 1)[-1], 0.0) + sample.value
    return counts


async def finished_count(api: httpx.AsyncClient) -> float:
    """Builds the server saw reach a final status so far (`outpost_builds_finished_total`, all statuses)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families((await api.get("/metrics")).text)
        for sample in family.samples
        if sample.name == "outpost_builds_finished_total"
    )


async def measure(url: str, token: str, pid: int, runners: list[int], builds: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, headers=headers, trust_env=False, limits=limits, timeout=60) as api:
        load = machine.load_average()
        print(f"# {builds} builds requested now (server pid {pid})", file=sys.stderr, flush=True)
        calls0 = await runner_calls(api)
        finished0 = await finished_count(api)
        cpu0, began = cpu_seconds(pid), time.monotonic()
        own0, kids0 = (sum(x) for x in zip(*(runner_cpu(r) for r in runners), strict=True))
        sem = asyncio.Semaphore(8)

        async def request() -> str:
            async with sem:
                return str(json_of(await api.post(f"/api/v1/pipelines/{PIPELINE}/builds", json={}))["id"])

        ids = await asyncio.gather(*(request() for _ in range(builds)))
        # Watched cheaply: the builds running now (a short list) and the count of finished builds (/metrics), every
        # 0.1 s. Listing all the builds instead cost the server ~32 ms of CPU per look at 300 builds, about a third
        # of its CPU in the run, and held its loop while dispatching (docs/benchmarks.md).
        most_running = 0
        async with asyncio.timeout(600):
            while True:
                running = 0
                for status in ("claimed", "running"):
                    running += len(json_of(await api.get("/api/v1/builds", params={"status": status, "limit": 500})))
                most_running = max(most_running, running)
                if await finished_count(api) - finished0 >= builds:
                    break
                await asyncio.sleep(0.1)
        elapsed = time.monotonic() - began
        own, kids = (sum(x) for x in zip(*(runner_cpu(r) for r in runners), strict=True))
        server_cpu = cpu_seconds(pid) - cpu0
        rows = json_of(await api.get("/api/v1/builds", params={"limit": 500}))  # once, after the CPU was read
        statuses = {r["id"]: r["status"] for r in rows if r["id"] in set(ids)}
        if len(statuses) != builds:
            raise BenchError(f"{builds - len(statuses)} of the builds are missing from the list")
        # The end is the last build's finished_at (the API's clock), not when this loop noticed it.
        last = max(_epoch(r["finished_at"]) for r in rows if r["id"] in set(ids))
        first = min(_epoch(r["created_at"]) for r in rows if r["id"] in set(ids))
        failed = sum(1 for s in statuses.values() if s != "success")
        calls = await runner_calls(api)
        return {
            "builds": builds,
            "builds_per_s": round(builds / (last - first), 1),
            "seconds": round(last - first, 2),
            "server_cpu_percent": round(server_cpu / elapsed * 100, 1),
            # CPU per build is what load changes least: compare these across revisions on a shared machine.
            "server_cpu_ms_per_build": round(server_cpu / builds * 1000, 1),
            "runner_cpu_ms_per_build": round((own - own0) / builds * 1000, 1),
            "steps_cpu_ms_per_build": round((kids - kids0) / builds * 1000, 1),
            "most_running_seen": most_running,
            # The runners' HTTP exchanges a build, as the server counted them (/metrics), by route's last part.
            "calls_per_build": {k: round((v - calls0.get(k, 0.0)) / builds, 2) for k, v in sorted(calls.items())},
            "not_success": failed,
            "load": round(load, 2),
        }


async def per_step(url: str, token: str, runners: list[int], builds: int) -> dict[str, Any]:
    """Builds of STEPS `true` steps, one at a time: the time from the first step's start to the last one's end
    (the runner's clock, in the API) divided by STEPS, and the runner's CPU per step."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, trust_env=False, timeout=60) as api:
        spans, own0 = [], sum(runner_cpu(r)[0] for r in runners)
        for _ in range(builds):
            bid = json_of(await api.post(f"/api/v1/pipelines/{STEPPED}/builds", json={}))["id"]
            async with asyncio.timeout(120):
                while (build := json_of(await api.get(f"/api/v1/builds/{bid}")))["status"] not in FINAL:
                    await asyncio.sleep(0.05)
            steps = [s for s in build["steps"] if s["name"] != "$system"]
            if build["status"] != "success" or len(steps) != STEPS:
                raise BenchError(f"build {bid} ended {build['status']} with {len(steps)} steps")
            first = min(_epoch(s["started_at"]) for s in steps)
            last = max(_epoch(s["finished_at"]) for s in steps)
            spans.append((last - first) / STEPS * 1000)
        own = sum(runner_cpu(r)[0] for r in runners) - own0
        spans.sort()
        return {
            "steps": STEPS,
            "builds": builds,
            "ms_per_step_p50": round(spans[len(spans) // 2], 2),
            "ms_per_step_min": round(spans[0], 2),
            "runner_cpu_ms_per_step": round(own / builds / STEPS * 1000, 2),
            "load": round(machine.load_average(), 2),
        }


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--layouts", default="1x8,4x4", help="RUNNERSxCONCURRENCY, comma-separated")
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--per-step", type=int, default=10, help="builds of 20 `true` steps (0: none)")
    parser.add_argument("--source", type=Path, help="run server and runners from DIR/src (an older revision)")
    args = parser.parse_args(argv)
    if not 1 <= args.builds <= 500:  # the builds are read back in one page of the build list (500 at most)
        parser.error("--builds must be between 1 and 500")
    stop_on_signals()
    print(json.dumps({"machine": dict(machine.describe()), "load": machine.load_average()}), flush=True)
    for layout in args.layouts.split(","):
        runners, concurrency = (int(x) for x in layout.split("x"))
        with tempfile.TemporaryDirectory(prefix="outpost-tp-") as tmp, Processes(Path(tmp) / "logs") as procs:
            try:
                pid, pids, url, token = start(procs, Path(tmp), runners, concurrency, args.source)
                time.sleep(IDLE_SETTLE)
                print(json.dumps({"layout": layout, "runner_rss_mib_idle": [rss_mib(p) for p in pids]}), flush=True)
                asyncio.run(measure(url, token, pid, pids, 20))  # warm-up
                for attempt in range(args.repeat):
                    row = asyncio.run(measure(url, token, pid, pids, args.builds))
                    print(json.dumps({"layout": layout, "run": attempt + 1, **row}), flush=True)
                if args.per_step and runners == 1:
                    row = asyncio.run(per_step(url, token, pids, args.per_step))
                    print(json.dumps({"layout": layout, "per_step": True, **row}), flush=True)
                time.sleep(IDLE_SETTLE)
                rss = [rss_mib(p) for p in pids]
                print(json.dumps({"layout": layout, "runner_rss_mib_idle_after_runs": rss}), flush=True)
            except BenchError as exc:
                print(json.dumps({"layout": layout, "failed": str(exc)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
