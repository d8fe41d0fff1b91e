"""Replicas: dispatch latency across control-plane replicas, and throughput with 2 replicas on PostgreSQL.

Real processes on loopback: a throw-away PostgreSQL cluster, `outpost server` replicas on it (each its own data
dir, one shared secret key), HAProxy (Debian's) in front for the throughput runs, and local-executor runners.

- latency: one runner polls replica B directly; trivial builds are requested one at a time through replica A
  (`a->b`) or through B itself (`b->b`). Per build: request sent → build stored → claimed (the `claimed_at`
  column, read from PostgreSQL) → the step's first command runs (`$EPOCHREALTIME`).
- throughput: R runners x C slots behind HAProxy in front of N replicas (`--replicas 1,2`); B builds of a `true`
  step requested as fast as 8 connections allow, through HAProxy; builds/s from the first build stored to the
  last finished, and the replicas' CPU over the run (/proc/PID/stat).

    .venv/bin/python bench/replicas.py                    # both, JSON lines on stdout
    .venv/bin/python bench/replicas.py --latency-builds 50 --throughput 4x4 --builds 300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

import loopback
import machine
from idle_runners import cpu_seconds
from loopback import json_of
from processes import Background, Processes, stop_on_signals
from waiting import BenchError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's PostgreSQL and HAProxy
from tests.components import haproxy, postgres_cluster

PIPELINE = "trivial"
STAMP = "version: '1.0'\nsteps:\n  t:\n    image: alpine\n    shell: bash\n    commands:\n      - echo $EPOCHREALTIME\n"
FINAL = {"success", "failure", "error", "terminated"}
KEY = Fernet.generate_key().decode()  # every replica of a run shares it (its secrets die with the run)


def database(base: str) -> str:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/postgres")
        try:
            await conn.execute("CREATE DATABASE outpost")
        finally:
            await conn.close()

    asyncio.run(create())
    return f"{base}/outpost"


def claimed_at(url: str, build_id: str) -> float | None:
    import asyncpg

    async def read() -> float | None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            value = await conn.fetchval("SELECT claimed_at FROM builds WHERE id = $1", build_id)
            return float(value) if value is not None else None
        finally:
            await conn.close()

    return asyncio.run(read())


@contextmanager
def installation(
    workdir: Path, replicas: int, source: Path | None = None
) -> Iterator[tuple[str, list[tuple[Background, str]], str]]:
    """PostgreSQL and `replicas` control planes on it; yields the database URL, (process, url) per replica and
    the admin token."""
    with postgres_cluster() as base, Processes(workdir / "logs") as procs:
        url = database(base)
        started: list[tuple[Background, str]] = []
        for i in range(replicas):
            port, data = loopback.free_port(), workdir / f"cp{i}"
            argv = [sys.executable, "-m", "outpost", "server", "--port", str(port), "--data-dir", str(data)]
            env = {"OUTPOST_DATABASE_URL": url, "OUTPOST_SECRET_KEY": KEY, **code(source)}
            server = procs.start(f"replica-{i}", argv, env=env)
            started.append((server, f"http://127.0.0.1:{port}"))
            with loopback.client(started[-1][1]) as api:
                server.wait_for(partial(_answers, api), f"replica {i} to answer")
        token_file = workdir / "cp0" / "admin-token"
        token = token_file.read_text().strip()
        yield url, started, token
        procs.stop_all()


def _answers(api: httpx.Client) -> bool | None:
    try:
        return True if api.get("/api/v1/health").status_code == 200 else None
    except httpx.HTTPError:
        return None


def code(source: Path | None) -> dict[str, str]:
    """The environment that runs Outpost from DIR/src (an older revision) instead of this checkout."""
    return {"PYTHONPATH": str(source / "src")} if source is not None else {}


def runners(
    procs: Processes, api: httpx.Client, url: str, workdir: Path, count: int, concurrency: int, source: Path | None
) -> None:
    for i in range(count):
        install = json_of(api.post("/api/v1/runtimes/bench/install-tokens"))["install_token"]
        argv = [sys.executable, "-m", "outpost", "runner", "start", "--url", url, "--name", f"r{i}"]
        argv += ["--concurrency", str(concurrency), "--data-dir", str(workdir / f"r{i}")]
        procs.start(f"runner-{i}", argv, env={"OUTPOST_RUNNER_TOKEN": install, **code(source)})

    def online() -> bool | None:
        rows = json_of(api.get("/api/v1/runners"))
        return True if sum(1 for r in rows if r["online"]) == count else None

    deadline = time.monotonic() + 60
    while not online():
        if time.monotonic() > deadline:
            raise BenchError(f"{count} runners did not come online")
        time.sleep(0.2)


def latency(workdir: Path, builds: int, warmup: int, source: Path | None) -> list[dict[str, Any]]:
    rows = []
    with installation(workdir, 2, source) as (url, replicas, token), Processes(workdir / "runner-logs") as procs:
        (_a, a_url), (_b, b_url) = replicas
        with loopback.client(a_url, token=token) as a, loopback.client(b_url, token=token) as b:
            json_of(a.post("/api/v1/runtimes", json={"name": "bench"}))
            json_of(a.post("/api/v1/pipelines", json={"name": PIPELINE, "yaml": STAMP, "runtime": "bench"}))
            runners(procs, a, b_url, workdir, 1, 1, source)  # its polls are held by B
            for route, api in (("a->b", a), ("b->b", b)):
                samples: dict[str, list[float]] = {"claim": [], "dispatch": [], "request": []}
                for i in range(warmup + builds):
                    time.sleep(0.3)  # the runner is back in a held poll
                    timed = one_build(api, b, url)
                    if i >= warmup:
                        for k, v in timed.items():
                            samples[k].append(v)
                rows.append({"route": route, "builds": builds, **summary(samples), "load": machine.load_average()})
    return rows


def one_build(api: httpx.Client, follow: httpx.Client, url: str) -> dict[str, float]:
    sent = time.time()
    build = json_of(api.post(f"/api/v1/pipelines/{PIPELINE}/builds", json={}))
    cursor, output = 0, b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = json_of(follow.get(f"/api/v1/builds/{build['id']}/log", params={"after": cursor, "wait": 20}))
        output += b"".join(base64.b64decode(p["data"]) for p in page["pieces"] if p["step"] == "t")
        cursor = page["cursor"]
        if page["finished"]:
            break
    else:
        raise BenchError(f"build {build['id']} did not finish in 60 s")
    final = json_of(follow.get(f"/api/v1/builds/{build['id']}"))
    if final["status"] != "success":
        raise BenchError(f"build {build['id']} ended {final['status']}: {final.get('message')}")
    stored = _epoch(final["created_at"])
    claimed = claimed_at(url, build["id"]) or stored
    return {"request": stored - sent, "claim": claimed - stored, "dispatch": float(output.split()[0]) - sent}


def summary(samples: dict[str, list[float]]) -> dict[str, float]:
    out = {}
    for key, values in samples.items():
        ordered = sorted(values)
        out[f"{key}_p50_ms"] = round(statistics.median(ordered) * 1000, 1)
        out[f"{key}_p90_ms"] = round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 1)
        out[f"{key}_max_ms"] = round(ordered[-1] * 1000, 1)
    return out


def throughput(workdir: Path, replicas: int, layout: str, builds: int, repeat: int) -> list[dict[str, Any]]:
    count, concurrency = (int(x) for x in layout.split("x"))
    rows = []
    with ExitStack() as stack:
        _url, started, token = stack.enter_context(installation(workdir, replicas))
        port = stack.enter_context(haproxy([int(u.rsplit(":", 1)[1]) for _p, u in started], workdir))
        procs = stack.enter_context(Processes(workdir / "runner-logs"))
        front = f"http://127.0.0.1:{port}"
        with loopback.client(front, token=token) as api:
            json_of(api.post("/api/v1/runtimes", json={"name": "bench"}))
            yaml = "version: '1.0'\nsteps:\n  t:\n    image: alpine\n    commands:\n      - 'true'\n"
            json_of(api.post("/api/v1/pipelines", json={"name": PIPELINE, "yaml": yaml, "runtime": "bench"}))
            runners(procs, api, front, workdir, count, concurrency, None)
        pids = [p.proc.pid for p, _u in started]
        asyncio.run(measure(front, token, pids, 20))  # warm-up
        for attempt in range(repeat):
            row = asyncio.run(measure(front, token, pids, builds))
            rows.append({"replicas": replicas, "layout": layout, "run": attempt + 1, **row})
    return rows


async def measure(url: str, token: str, pids: list[int], builds: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, headers=headers, trust_env=False, limits=limits, timeout=60) as api:
        load = machine.load_average()
        cpu0, began = [cpu_seconds(p) for p in pids], time.monotonic()
        sem = asyncio.Semaphore(8)

        async def request() -> str:
            async with sem:
                return str(json_of(await api.post(f"/api/v1/pipelines/{PIPELINE}/builds", json={}))["id"])

        ids = set(await asyncio.gather(*(request() for _ in range(builds))))
        async with asyncio.timeout(600):
            while True:
                rows = [r for r in json_of(await api.get("/api/v1/builds", params={"limit": 500})) if r["id"] in ids]
                if len(rows) == builds and all(r["status"] in FINAL for r in rows):
                    break
                await asyncio.sleep(0.2)
        elapsed = time.monotonic() - began
        cpu = [round((cpu_seconds(p) - c) / elapsed * 100, 1) for p, c in zip(pids, cpu0, strict=True)]
        first = min(_epoch(r["created_at"]) for r in rows)
        last = max(_epoch(r["finished_at"]) for r in rows)
        return {
            "builds": builds,
            "builds_per_s": round(builds / (last - first), 1),
            "seconds": round(last - first, 2),
            "replicas_cpu_percent": cpu,
            "not_success": sum(1 for r in rows if r["status"] != "success"),
            "load": round(load, 2),
        }


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--latency-builds", type=int, default=30, help="measured builds per route (0: skip)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--throughput", default="4x4", help="RUNNERSxCONCURRENCY layouts, comma-separated")
    parser.add_argument("--replicas", default="1,2", help="replica counts for the throughput runs")
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--source", type=Path, help="latency only: run replicas and runner from DIR/src")
    args = parser.parse_args(argv)
    stop_on_signals()
    print(json.dumps({"machine": dict(machine.describe()), "load": machine.load_average()}), flush=True)
    if args.latency_builds:
        with tempfile.TemporaryDirectory(prefix="outpost-rl-") as tmp:
            for row in latency(Path(tmp), args.latency_builds, args.warmup, args.source):
                print(json.dumps({"latency": True, **row}), flush=True)
    for layout in filter(None, args.throughput.split(",")):
        for replicas in (int(n) for n in args.replicas.split(",")):
            with tempfile.TemporaryDirectory(prefix="outpost-rt-") as tmp:
                try:
                    for row in throughput(Path(tmp), replicas, layout, args.builds, args.repeat):
                        print(json.dumps(row), flush=True)
                except BenchError as exc:
                    print(json.dumps({"replicas": replicas, "layout": layout, "failed": str(exc)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
