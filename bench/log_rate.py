"""End-to-end log rate: a step that prints a large log, through a real server and runner, with masking off and on.

The step pipes `yes` through `head -c`: SIZE bytes of ordinary log lines (none holds a secret). *Masking off*:
the pipeline has no secret; *masking on*: it has two or three of SECRETS (a token, a password that every encoding
changes, a 27-line private key), so the runner searches every chunk for their forms. The rate is the log's size
divided by the time from the step's start to the build's end (both from the API; a build ends only once its
log is stored): the runner reading the output, masking it, sending it, and the control plane storing it. The runs
take turns so that other load on the machine falls on each. Also measured: the masker alone, in this
process, on the same lines.

    .venv/bin/python bench/log_rate.py [--mib 200] [--repeat 3] [--only off|on]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sqlite3
import statistics
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import loopback
import machine
from loopback import json_of
from outpost.masking import Masker, forms
from outpost_layouts import start_separate
from processes import Processes, stop_on_signals
from waiting import BenchError, deadline_in, past

LINE = "2026-12-07T01:02:03Z INFO compiling src/module_42/handler.c -> build/obj/handler.o (-O2 -Wall) ok"
_BODY = textwrap.wrap(base64.b64encode(random.Random(7).randbytes(1300)).decode(), 70)[:25]
KEY = "\n".join(
    ["-----BEGIN OPENSSH PRIVATE KEY-----", *_BODY, "-----END OPENSSH PRIVATE KEY-----"]
)  # an RSA key's shape
SECRETS = {"API_TOKEN": "ghp_R4nd0mT0k3nV4lu3F0rB3nchm4rk1ngXyZ0", "DB_PASSWORD": "p@ss w/rd+&é-42", "SSH_KEY": KEY}


def yaml(size: int) -> str:
    return f"""\
version: '1.0'
steps:
  print:
    image: alpine:3.20  # the local executor ignores it
    commands:
      - yes '{LINE}' | head -c {size}
  check:
    image: alpine:3.20
    commands:
      - printf '%s' "${{{{API_TOKEN}}}}" | base64
"""


def run_once(api: httpx.Client, name: str, *, masked: bool) -> tuple[float, str]:
    """Seconds from the step's start to the build's end (the control plane's own timestamps), and the build."""
    build = json_of(api.post(f"/api/v1/pipelines/{name}/builds", json={}))
    deadline = deadline_in(900)
    while not past(deadline):
        final = json_of(api.get(f"/api/v1/builds/{build['id']}"))
        if final.get("finished_at"):
            if final["status"] != "success":
                raise BenchError(f"build {build['id']} ended {final['status']}: {final.get('message')}")
            step = next(s for s in final["steps"] if s["name"] == "print")
            started = datetime.fromisoformat(step["started_at"]).timestamp()
            check = api.get(f"/api/v1/builds/{build['id']}/steps/check/log").content
            if (b"*****" in check) != masked:
                raise BenchError(f"masking is not what {name} expects: the check step printed {check!r}")
            # The build finishes once the runner has every byte of its log stored.
            return datetime.fromisoformat(final["finished_at"]).timestamp() - started, build["id"]
        time.sleep(0.2)
    raise BenchError(f"build {build['id']} did not finish")


CASES = {  # label -> the pipeline's secrets
    "off": {},
    "on: token + password": {k: SECRETS[k] for k in ("API_TOKEN", "DB_PASSWORD")},
    "on: token + password + 27-line key": SECRETS,
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process itself has used (not its children: the step's `yes` and `head`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def read_back(api: httpx.Client, build_id: str, server: int) -> tuple[float, float, float, int]:
    """Reads the build's `print` log whole through the API, as a client streams it: MB/s, the server's RSS
    before and at its highest while it answered (sampled every 10 ms), and the bytes read."""
    before = rss_mb(server)
    peak = before
    got = 0
    start = time.perf_counter()
    last_sample = 0.0
    with api.stream("GET", f"/api/v1/builds/{build_id}/steps/print/log") as r:
        for data in r.iter_bytes(1024 * 1024):
            got += len(data)
            if time.perf_counter() - last_sample > 0.01:
                peak, last_sample = max(peak, rss_mb(server)), time.perf_counter()
    seconds = time.perf_counter() - start
    return got / 1e6 / seconds, before, max(peak, rss_mb(server)), got


def chunks_of(database: Path, build_id: str) -> int:
    """How many pieces the control plane stored the build's `print` log in (one or more per report)."""
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as db:
        query = (
            "SELECT count(*) FROM log_chunks JOIN steps ON steps.id = log_chunks.step_id"
            " WHERE steps.build_id = ? AND steps.name = 'print'"
        )
        return int(db.execute(query, (build_id,)).fetchone()[0])


def masker_alone(size: int, secrets: dict[str, str]) -> float:
    """MB/s of `Masker.feed` alone, in this process, over 64 KiB chunks of the same lines."""
    chunk = ((LINE + "\n") * (65536 // len(LINE) + 1)).encode()[:65536]
    masker = Masker(secrets.values())
    n = max(1, size // len(chunk))
    start = time.perf_counter()
    for _ in range(n):
        masker.feed(chunk)
    return n * len(chunk) / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["off", "on"], help="only the cases with masking off (or on)")
    args = parser.parse_args()
    cases = {k: v for k, v in CASES.items() if args.only is None or k.startswith(args.only)}
    stop_on_signals()
    size = args.mib * 1024 * 1024
    load_before = machine.load_average()
    rates: dict[str, list[float]] = {label: [] for label in CASES}
    cpu: dict[str, list[float]] = {label: [] for label in CASES}
    server_cpu: dict[str, list[float]] = {label: [] for label in CASES}
    names = {label: f"log-{n}" for n, label in enumerate(CASES)}
    with tempfile.TemporaryDirectory(prefix="outpost-lograte-") as tmp, Processes(Path(tmp) / "logs") as procs:
        target = start_separate(procs, Path(tmp))
        runner = next(p for p in procs.started if p.name == "outpost-runner").proc.pid
        server = next(p for p in procs.started if p.name in ("outpost-server", "outpost-up")).proc.pid
        last_build = ""
        print(f"runner pid {runner}, control plane pid {server} (for a profiler: py-spy record --pid PID)", flush=True)
        with loopback.client(target.url, token=target.token, timeout=60) as api:
            for label, secrets in CASES.items():
                body: dict[str, Any] = {"name": names[label], "yaml": yaml(size), "runtime": "bench"}
                json_of(api.post("/api/v1/pipelines", json={**body, "secrets": secrets}))
            for _ in range(args.repeat):
                for label, secrets in cases.items():
                    before, server_before = cpu_seconds(runner), cpu_seconds(server)
                    seconds, last_build = run_once(api, names[label], masked=bool(secrets))
                    cpu[label].append(cpu_seconds(runner) - before)
                    server_cpu[label].append(cpu_seconds(server) - server_before)
                    rates[label].append(size / 1e6 / seconds)
                    print(
                        f"{label}: {size / 1e6 / seconds:.1f} MB/s ({seconds:.2f} s), "
                        f"runner CPU {cpu[label][-1]:.2f} s, control plane CPU {server_cpu[label][-1]:.2f} s, "
                        f"{chunks_of(target.database, last_build)} chunks stored"
                    )
            read_rate, rss_before, rss_peak, read_bytes = read_back(api, last_build, server)
            if read_bytes != size:
                raise BenchError(f"read {read_bytes} bytes of the {size}-byte log back")
    print()
    print("| Machine | |\n|---|---|")
    for key, value in machine.describe():
        print(f"| {key} | {value} |")
    print(f"| Load average (1 min) | {load_before:.2f} before, {machine.load_average():.2f} after |")
    print()
    best_off = max(rates["off"] or [float("nan")])
    cpu_off = statistics.median(cpu["off"] or [float("nan")])
    print(
        "| Masking | forms | runs (MB/s) | median | best | best vs off | runner CPU (s, median) "
        "| control plane CPU (s, median) | masker alone (MB/s) |"
    )
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|")
    for label, secrets in cases.items():
        median, best, runner_cpu = statistics.median(rates[label]), max(rates[label]), statistics.median(cpu[label])
        count = sum(len(forms(v)) for v in secrets.values())
        alone = f"{masker_alone(64 * 1024 * 1024, secrets):.0f}" if secrets else "—"
        runs = ", ".join(f"{r:.1f}" for r in rates[label])
        print(
            f"| {label} | {count} | {runs} | {median:.1f} | {best:.1f} | {100 * (best - best_off) / best_off:+.1f}% "
            f"| {runner_cpu:.2f} ({runner_cpu - cpu_off:+.2f}) | {statistics.median(server_cpu[label]):.2f} | {alone} |"
        )
    print()
    print("| Reading the whole log back (GET /steps/print/log) | MB/s | server RSS before | server RSS peak |")
    print("|---|--:|--:|--:|")
    print(f"| {size / 1e6:.0f} MB | {read_rate:.0f} | {rss_before:.0f} MB | {rss_peak:.0f} MB |")


if __name__ == "__main__":
    main()
