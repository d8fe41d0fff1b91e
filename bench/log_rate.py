"""End-to-end log rate: a step that prints a large log, through a real server and runner, with masking off and on.

The step pipes `yes` through `head -c`: SIZE bytes of ordinary log lines (none holds a secret). *Masking off*:
the pipeline has no secret; *masking on*: it has SECRETS (a token, a password that every encoding changes, a
multi-line private key), so the runner searches every chunk for each of their forms. The rate is the log's size
divided by the time from the step's start to the build's end (both from the API; a build ends only once its
log is stored): the runner reading the output, masking it, sending it, and the control plane storing it. The runs
alternate off/on so that other load on the machine falls on both. Also measured: the masker alone, in this
process, on the same lines.

    .venv/bin/python bench/log_rate.py [--mib 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import loopback
import machine
from loopback import json_of
from outpost.engine.masking import Masker, forms
from outpost_layouts import start_separate
from processes import Processes, stop_on_signals
from waiting import BenchError, deadline_in, past

LINE = "2026-12-07T01:02:03Z INFO compiling src/module_42/handler.c -> build/obj/handler.o (-O2 -Wall) ok"
KEY = "\n".join(
    ["-----BEGIN OPENSSH PRIVATE KEY-----"]
    + [f"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAABlwAAAAdzc2gtcn{n:02d}" for n in range(25)]
    + ["-----END OPENSSH PRIVATE KEY-----"]
)
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


def run_once(api: httpx.Client, name: str) -> float:
    """Seconds from the step's start to the build's end (the control plane's own timestamps)."""
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
            if (b"*****" in check) != (name == "log-on"):
                raise BenchError(f"masking is not what {name} expects: the check step printed {check!r}")
            # The build finishes once the runner has every byte of its log stored.
            return datetime.fromisoformat(final["finished_at"]).timestamp() - started
        time.sleep(0.2)
    raise BenchError(f"build {build['id']} did not finish")


def masker_alone(size: int) -> dict[str, float]:
    """MB/s of `Masker.feed` over 64 KiB chunks of the same lines, with no secret and with SECRETS."""
    chunk = ((LINE + "\n") * (65536 // len(LINE) + 1)).encode()[:65536]
    out = {}
    for label, secrets in (("off", []), ("on", list(SECRETS.values()))):
        masker = Masker(secrets)
        n = max(1, size // len(chunk))
        start = time.perf_counter()
        for _ in range(n):
            masker.feed(chunk)
        out[label] = n * len(chunk) / 1e6 / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stop_on_signals()
    size = args.mib * 1024 * 1024
    load_before = machine.load_average()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="outpost-lograte-") as tmp, Processes(Path(tmp) / "logs") as procs:
        target = start_separate(procs, Path(tmp))
        with loopback.client(target.url, token=target.token, timeout=60) as api:
            for label, secrets in (("off", {}), ("on", SECRETS)):
                body: dict[str, Any] = {"name": f"log-{label}", "yaml": yaml(size), "runtime": "bench"}
                json_of(api.post("/api/v1/pipelines", json={**body, "secrets": secrets}))
            for _ in range(args.repeat):
                for label in ("off", "on"):
                    seconds = run_once(api, f"log-{label}")
                    rates[label].append(size / 1e6 / seconds)
                    print(f"masking {label}: {size / 1e6 / seconds:.1f} MB/s ({seconds:.2f} s)", flush=True)
    alone = masker_alone(64 * 1024 * 1024)
    forms_count = sum(len(forms(v)) for v in SECRETS.values())
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print()
    print("| Machine | |\n|---|---|")
    for key, value in machine.describe():
        print(f"| {key} | {value} |")
    print(f"| Load average (1 min) | {load_before:.2f} before, {machine.load_average():.2f} after |")
    print()
    print("| Masking | runs (MB/s) | median (MB/s) |\n|---|---|--:|")
    for label, median in (("off", off), ("on", on)):
        print(f"| {label} | {', '.join(f'{r:.1f}' for r in rates[label])} | {median:.1f} |")
    print()
    print(f"Masking on costs {100 * (off - on) / off:.1f}% of the end-to-end rate ({forms_count} forms of 3 secrets).")
    print(f"The masker alone, 64 KiB chunks: {alone['off']:.0f} MB/s without secrets, {alone['on']:.0f} MB/s with.")


if __name__ == "__main__":
    main()
