"""Web UI with a big log: how fast a build page with a 50,000-line step log opens, and how much it weighs.

    .venv/bin/python bench/ui_log.py [--lines 50000] [--repeat 20] [--write docs/benchmarks.md]

Starts `outpost server` as its own process on loopback (SQLite), feeds one build a log of `--lines`
lines (~90 bytes each, with ANSI colours) through the real runner protocol, logs in as `admin` like a
browser, then fetches each URL `--repeat` times after two warm-up fetches: the build page (it opens on
the log's last 500 lines), one "earlier lines" page (1,000 lines), and, for comparison, the whole raw
log (what a page that dumps the log would have to send before it could show anything).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
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

PIPELINE = "version: '1.0'\nsteps:\n  test:\n    image: alpine\n    commands: [make test]\n"
RUNNER = "/api/runner/v1"
CHUNK = 512 * 1024


def log_of(lines: int) -> bytes:
    return b"".join(
        b"\x1b[32m%6d\x1b[0m 2026-11-26T02:16:32.%03dZ INFO worker[%d] processed item %d of the batch in %d ms\n"
        % (i, i % 1000, i % 8, i, i % 97)
        for i in range(1, lines + 1)
    )


def _answers(url: str) -> bool:
    try:
        with loopback.client(url, timeout=2) as c:
            return c.get("/api/v1/health").status_code == 200
    except httpx.HTTPError:
        return False


def seed(url: str, token: str, log: bytes) -> str:
    """One finished build whose only step printed `log`, delivered as a runner would."""
    with loopback.client(url, token=token) as api, loopback.client(url) as raw:
        install = json_of(api.post("/api/v1/runtimes", json={"name": "bench"}))["install_token"]
        json_of(api.post("/api/v1/pipelines", json={"name": "big-log", "yaml": PIPELINE}))
        runner = json_of(raw.post(f"{RUNNER}/register", json={"install_token": install, "name": "bench"}))
        build = json_of(api.post("/api/v1/pipelines/big-log/builds", json={"branch": "main"}))
        poll = raw.post(
            f"{RUNNER}/poll",
            json={"wait": 0, "free_slots": 1, "running": []},
            headers={"Authorization": f"Bearer {runner['runner_token']}"},
        )
        task = json_of(poll)["task"]
        job = {"Authorization": f"Bearer {task['job_token']}", "Outpost-Lease": task["lease_id"]}
        base = f"{RUNNER}/builds/{build['id']}"
        json_of(raw.post(f"{base}/started", json={"steps": [{"name": "test"}]}, headers=job))
        for offset in range(0, len(log), CHUNK):
            part = log[offset : offset + CHUNK]
            headers = {**job, "Content-Type": "application/octet-stream"}
            json_of(raw.put(f"{base}/steps/test/log", params={"offset": offset}, content=part, headers=headers))
        json_of(raw.post(f"{base}/steps/test", json={"status": "success", "exit_code": 0}, headers=job))
        json_of(raw.post(f"{base}/finish", json={"status": "success"}, headers=job))
        return str(build["id"])


def log_in(browser: httpx.Client, password: str) -> None:
    form = browser.get("/login")
    match = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if match is None:
        raise BenchError("the login form has no CSRF token")
    answer = browser.post("/login", data={"csrf": match.group(1), "username": "admin", "password": password})
    if answer.status_code != 303:
        raise BenchError(f"logging in failed: {answer.status_code}")


def fetch(browser: httpx.Client, path: str) -> tuple[float, float, int]:
    """Time to first byte (ms), time to the last byte (ms) and bytes of the body, as sent (no compression)."""
    start = time.perf_counter()
    with browser.stream("GET", path) as response:
        if response.status_code != 200:
            raise BenchError(f"GET {path}: {response.status_code}")
        chunks = response.iter_raw()
        first = next(chunks, b"")
        ttfb = time.perf_counter() - start
        size = len(first) + sum(len(c) for c in chunks)
    return ttfb * 1000, (time.perf_counter() - start) * 1000, size


def measure(browser: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    for _ in range(2):
        fetch(browser, path)
    samples = [fetch(browser, path) for _ in range(repeat)]
    ttfb, total, sizes = zip(*samples, strict=True)
    return {
        "ttfb": statistics.median(ttfb),
        "ttfb_max": max(ttfb),
        "total": statistics.median(total),
        "total_max": max(total),
        "bytes": sizes[-1],
    }


def run(lines: int, repeat: int, workdir: Path) -> dict[str, Any]:
    data, port = workdir / "server", loopback.free_port()
    log = log_of(lines)
    with Processes(workdir / "logs") as procs:
        server = procs.start("outpost-server", outpost_argv("server", "--port", str(port), "--data-dir", str(data)))
        url = f"http://127.0.0.1:{port}"
        password_file = data / "admin-password"
        server.wait_for(lambda: (_answers(url) and password_file.read_text().strip()) or None, "the control plane")
        token = (data / "admin-token").read_text().strip()
        build_id = seed(url, token, log)
        with loopback.client(url) as browser:
            log_in(browser, password_file.read_text().strip())
            page = measure(browser, f"/builds/{build_id}", repeat)
            earlier = measure(
                browser, f"/ui/builds/{build_id}/steps/test/lines?start={lines - 1499}&count=1000", repeat
            )
            whole = measure(browser, f"/builds/{build_id}/steps/test/log.txt", repeat)
        load = machine.load_average()
    return {"lines": lines, "log_bytes": len(log), "repeat": repeat, "page": page, "earlier": earlier,
            "whole": whole, "load": load}  # fmt: skip


def render(result: dict[str, Any], command: str, load_before: float) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in machine.describe())

    def row(label: str, r: dict[str, Any]) -> str:
        return (
            f"| {label} | {r['ttfb']:.1f} | {r['ttfb_max']:.1f} | {r['total']:.1f} | {r['total_max']:.1f} | "
            f"{r['bytes'] / 1024:.0f} KiB |"
        )

    return f"""## Web UI: a build page with a {result["lines"]:,}-line log

- **Command**: `{command}`: `outpost server` 0.1.0 on loopback (SQLite); one finished build whose step
  printed {result["lines"]:,} lines ({result["log_bytes"] / 1024 / 1024:.1f} MiB, ANSI colours), delivered
  through the runner protocol; a logged-in client fetches each URL {result["repeat"]} times after 2 warm-ups.
  Medians and maxima; sizes are bodies as sent (no compression).
- **The build page** opens on the log's last 500 lines, rendered to HTML on the server (ANSI colours as
  classes, numbered line anchors); earlier lines come 1,000 at a time when asked for. The raw download is
  what a page that dumps the whole log would send before showing anything.

| Machine | |
|---|---|
{rows}
| Load average (1 min) | {load_before:.2f} before, {result["load"]:.2f} after |

| Request | TTFB p50 (ms) | TTFB max (ms) | Complete p50 (ms) | Complete max (ms) | Body |
|---|--:|--:|--:|--:|--:|
{row("Build page (`/builds/ID`, last 500 lines)", result["page"])}
{row("Earlier lines (1,000 lines, HTML)", result["earlier"])}
{row("Whole raw log (`log.txt`)", result["whole"])}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--write", type=Path, help="Put the results into this Markdown file.")
    args = parser.parse_args()
    command = " ".join([".venv/bin/python", "bench/ui_log.py", *sys.argv[1:]])
    before = machine.load_average()
    with tempfile.TemporaryDirectory(prefix="outpost-bench-ui-") as tmp:
        result = run(args.lines, args.repeat, Path(tmp))
    section = render(result, command, before)
    print(section)
    if args.write:
        write_section(args.write, section, "bench/ui_log.py")


if __name__ == "__main__":
    main()
