"""Webhook throughput: signed GitHub pushes POSTed to a real `outpost server`, each verified, parsed,
filtered and turned into a queued build, measured as deliveries per second.

    .venv/bin/python bench/webhooks.py [--count 1000] [--concurrency 8] [--write docs/benchmarks.md]

The control plane runs as its own process on loopback with its default SQLite database; no runner is
started, so every build stays queued and only the webhook path is measured. The payload is a GitHub push
of three commits (about 2.5 KB), each delivery with its own delivery id. At the end the database must hold
exactly `count` queued builds of the trigger, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

import loopback
import machine
from loopback import json_of
from mdsection import write_section
from outpost_layouts import outpost_argv
from processes import Processes
from waiting import BenchError

PIPELINE = "version: '1.0'\nsteps:\n  hello:\n    image: alpine\n    commands: [echo hi]\n"


def push_payload(n: int) -> dict[str, Any]:
    """A GitHub push of three commits to main, shaped like the real ones (fixtures/webhooks/github)."""
    sha = hashlib.sha1(str(n).encode()).hexdigest()
    commits = [
        {
            "id": hashlib.sha1(f"{n}-{i}".encode()).hexdigest(),
            "message": f"Change {i} of push {n}",
            "timestamp": "2026-11-26T10:00:00Z",
            "url": f"https://github.example.com/acme/api/commit/{sha}",
            "author": {"name": "Dev", "email": "dev@example.com", "username": "dev"},
            "committer": {"name": "Dev", "email": "dev@example.com", "username": "dev"},
            "added": [f"src/new_{i}.py"],
            "removed": [],
            "modified": ["src/app.py", "README.md"],
        }
        for i in range(3)
    ]
    return {
        "ref": "refs/heads/main",
        "before": hashlib.sha1(f"before-{n}".encode()).hexdigest(),
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": "https://github.example.com/acme/api/compare/a...b",
        "commits": commits,
        "head_commit": commits[-1],
        "repository": {
            "id": 1,
            "name": "api",
            "full_name": "acme/api",
            "private": True,
            "owner": {"name": "acme", "login": "acme"},
            "html_url": "https://github.example.com/acme/api",
            "clone_url": "https://github.example.com/acme/api.git",
            "default_branch": "main",
        },
        "pusher": {"name": "dev", "email": "dev@example.com"},
        "sender": {"login": "dev", "id": 2, "type": "User"},
    }


async def deliver_all(url: str, bodies: list[bytes], secret: str, concurrency: int) -> tuple[float, list[float]]:
    """POSTs every body with `concurrency` requests in flight; returns the wall time and each latency (ms)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    transport = httpx.AsyncHTTPTransport(socket_options=loopback.NODELAY)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
                }
                start = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - start) * 1000)
                if r.status_code != 201:
                    raise BenchError(f"delivery answered {r.status_code}: {r.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def queued_builds(database: Path, trigger_id: str) -> int:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT count(*) FROM builds WHERE trigger_id = ? AND status = 'queued'", (trigger_id,))
        return int(row.fetchone()[0])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run(count: int, concurrency: int, warmup: int, workdir: Path) -> dict[str, Any]:
    with Processes(workdir / "logs") as procs:
        data, port = workdir / "server", loopback.free_port()
        server = procs.start("outpost-server", outpost_argv("server", "--port", str(port), "--data-dir", str(data)))
        token_file = data / "admin-token"
        token = server.wait_for(lambda: token_file.read_text().strip() if token_file.exists() else None, "token")
        base = f"http://127.0.0.1:{port}"
        with loopback.client(base, token=token) as api:
            server.wait_for(lambda: api.get("/api/v1/whoami").status_code == 200 or None, "the API")
            version = json_of(api.get("/api/v1/health"))["version"]
            json_of(api.post("/api/v1/runtimes", json={"name": "bench"}))
            json_of(api.post("/api/v1/pipelines", json={"name": "bench", "yaml": PIPELINE}))
            trigger = json_of(
                api.post(
                    "/api/v1/triggers",
                    json={"pipeline": "bench", "provider": "github", "repo": "acme/api", "events": ["push"]},
                )
            )
        endpoint = trigger["endpoint"]
        bodies = [json.dumps(push_payload(n)).encode() for n in range(warmup + count)]
        asyncio.run(deliver_all(endpoint, bodies[:warmup], trigger["secret"], concurrency))
        load_before = machine.load_average()
        seconds, latencies = asyncio.run(deliver_all(endpoint, bodies[warmup:], trigger["secret"], concurrency))
        load_after = machine.load_average()
        made = queued_builds(data / "outpost.db", trigger["id"])
        if made != warmup + count:
            raise BenchError(f"{warmup + count} deliveries made {made} queued builds")
    return {
        "version": version,
        "count": count,
        "concurrency": concurrency,
        "warmup": warmup,
        "payload_bytes": int(statistics.mean(len(b) for b in bodies)),
        "seconds": seconds,
        "latencies": latencies,
        "load": (load_before, load_after),
    }


def render(result: dict[str, Any], command: str) -> str:
    lat = result["latencies"]
    rate = result["count"] / result["seconds"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in machine.describe())
    before, after = result["load"]
    return f"""## Webhooks: signed deliveries → queued builds

- **Command**: `{command}`: {result["count"]} measured deliveries after {result["warmup"]} warm-up ones,
  {result["concurrency"]} in flight at a time, each a GitHub push (~{result["payload_bytes"]} bytes, its own delivery
  id) signed with HMAC-SHA256, POSTed over loopback to `outpost server` {result["version"]} (SQLite, no runner).
- **Each delivery**: body read, signature checked, JSON parsed, trigger rules applied, delivery id checked
  for a redelivery, a queued build and its delivery row committed, runners woken. Afterwards the database
  held exactly one queued build per delivery.

| Machine | |
|---|---|
{rows}
| Load average (1 min) | {before:.2f} before, {after:.2f} after |

| Deliveries | In flight | Wall time (s) | Deliveries/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |
|--:|--:|--:|--:|--:|--:|--:|--:|
| {result["count"]} | {result["concurrency"]} | {result["seconds"]:.2f} | {rate:.0f} | {percentile(lat, 50):.1f} | \
{percentile(lat, 90):.1f} | {percentile(lat, 99):.1f} | {max(lat):.1f} |
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--write", type=Path, help="Put the results into this Markdown file.")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "bench/webhooks.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="outpost-bench-webhooks-") as tmp:
        result = run(args.count, args.concurrency, args.warmup, Path(tmp))
    section = render(result, command)
    print(section)
    if args.write:
        write_section(args.write, section, "bench/webhooks.py")


if __name__ == "__main__":
    main()
