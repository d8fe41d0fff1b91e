"""Web UI with a big log, side by side with Buildbot: what a build page with a 50,000-line step log sends.

    .venv/bin/python bench/ui_log.py [--lines 50000] [--repeat 20] [--systems outpost,buildbot]
                                     [--write docs/benchmarks.md]

Each system runs alone, as its own processes on loopback (SQLite), and gets the same log of `--lines`
lines (~90 bytes each, with ANSI colours); every URL is fetched `--repeat` times after two warm-ups,
uncompressed (`Accept-Encoding: identity`).

- Outpost: `outpost server`; the log reaches one build through the real runner protocol; a client logged
  in as `admin` fetches the build page (server-rendered, opens on the log's last 500 lines), one
  "earlier lines" page (1,000 lines) and the whole raw log.
- Buildbot 4.3: a master and a worker (bench/buildbot_logs.py) run one forced build whose ShellCommand
  `cat`s the same bytes. Its web UI is a single-page app: the HTML shell (`/`), then, after the JS
  bundle (fetched once, reported apart) has run, REST calls. Measured: the shell, the step's log list
  (which gives the log id and line count), the `logs/{id}/contents?offset=&limit=` requests its log
  viewers make (the build page's preview of the last 40 lines; the log page at its top and at its end,
  visible rows + 500 of overscan) and the whole raw log (`logs/{id}/raw`, its download button).
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
from buildbot_logs import BigLog, BuildbotLogs
from loopback import json_of
from mdsection import write_section
from outpost_layouts import outpost_argv
from peers import Skipped
from processes import Processes, stop_on_signals
from waiting import BenchError

PIPELINE = "version: '1.0'\nsteps:\n  test:\n    image: alpine\n    commands: [make test]\n"
RUNNER = "/api/runner/v1"
CHUNK = 512 * 1024
SYSTEMS = ("outpost", "buildbot")
# Buildbot's log viewers (buildbot-www 4.3): the build page's preview loads `LogPreview.loadlines` (40) of the
# last lines; the log page (react-window, 18-px rows) asks for the visible rows plus
# `downloadOverscanRowCount` (500). 50 visible rows is a ~900-px log area.
BB_PREVIEW_LINES = 40
BB_VISIBLE_ROWS = 50
BB_OVERSCAN = 500


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


def browser_at(url: str) -> httpx.Client:
    """A client that asks for bodies as they are (no compression), so sizes compare."""
    client = loopback.client(url)
    client.headers["Accept-Encoding"] = "identity"
    return client


def run_outpost(log: bytes, repeat: int, workdir: Path) -> dict[str, Any]:
    lines = log.count(b"\n")
    data, port = workdir / "server", loopback.free_port()
    with Processes(workdir / "logs") as procs:
        server = procs.start("outpost-server", outpost_argv("server", "--port", str(port), "--data-dir", str(data)))
        url = f"http://127.0.0.1:{port}"
        password_file = data / "admin-password"
        server.wait_for(lambda: (_answers(url) and password_file.read_text().strip()) or None, "the control plane")
        token = (data / "admin-token").read_text().strip()
        build_id = seed(url, token, log)
        with browser_at(url) as browser:
            log_in(browser, password_file.read_text().strip())
            rows = [
                ("Build page (`/builds/ID`)", "last 500", measure(browser, f"/builds/{build_id}", repeat)),
                (
                    "Earlier lines (HTML fragment)",
                    "1,000",
                    measure(browser, f"/ui/builds/{build_id}/steps/test/lines?start={lines - 1499}&count=1000", repeat),
                ),
                (
                    "Whole raw log (`log.txt`)",
                    "all",
                    measure(browser, f"/builds/{build_id}/steps/test/log.txt", repeat),
                ),
            ]
            gzipped = compressed_size(browser, f"/builds/{build_id}/steps/test/log.txt")
        return {"rows": rows, "gzipped_raw": gzipped, "load": machine.load_average(), "remarks": procs.remarks}


def run_buildbot(log: bytes, repeat: int, workdir: Path) -> dict[str, Any]:
    log_file = workdir / "big.log"
    log_file.write_bytes(log)
    procs = Processes(workdir / "logs")
    peer = BuildbotLogs(procs, workdir)
    try:
        with procs:
            peer.start(log_file)
            big = peer.run_build()
            with browser_at(peer.www) as browser:
                check_same_log(browser, big, log)
                result = measure_buildbot(browser, big, repeat)
            result["load"] = machine.load_average()
    except (BenchError, Skipped, httpx.HTTPError, OSError, StopIteration) as exc:
        text = str(exc).strip().replace("\n", " / ")
        return {"skipped": text if isinstance(exc, BenchError | Skipped) else f"{type(exc).__name__}: {text}"}
    finally:
        peer.close()
    return {**result, "version": peer.version, "big": big, "remarks": procs.remarks}


def check_same_log(browser: httpx.Client, big: BigLog, log: bytes) -> None:
    """Buildbot's raw log must hold our bytes, and `contents` must give back as many lines as asked for."""
    if log.decode() not in browser.get(f"/api/v2/logs/{big.logid}/raw").text:
        raise BenchError("Buildbot's raw log does not contain the log the step printed")
    answer = json_of(browser.get(f"/api/v2/logs/{big.logid}/contents", params={"offset": 0, "limit": 10}))
    if answer["logchunks"][0]["content"].count("\n") != 10:
        raise BenchError("Buildbot's log contents answer did not hold the 10 lines asked for")


def measure_buildbot(browser: httpx.Client, big: BigLog, repeat: int) -> dict[str, Any]:
    shell = measure(browser, "/", repeat)
    index = browser.get("/").text
    assets = [
        (name, fetch(browser, f"/{name}"))
        for name in re.findall(r'(?:src|href)="\./(assets/[^"]+\.(?:js|css))"', index)
    ]
    if not any(name.endswith(".js") for name, _ in assets):
        raise BenchError("Buildbot's index.html names no JS bundle")
    n, window = big.num_lines, BB_VISIBLE_ROWS + BB_OVERSCAN

    def contents(offset: int, limit: int) -> dict[str, Any]:
        return measure(browser, f"/api/v2/logs/{big.logid}/contents?offset={offset}&limit={limit}", repeat)

    rows = [
        ("(a) App shell (`/`; the page is `/#/builders/B/builds/N`)", "none", shell),
        ("Step's log list (`/api/v2/steps/S/logs`: log id, line count)", "none",
         measure(browser, f"/api/v2/steps/{big.stepid}/logs", repeat)),
        (f"(b) Build page preview (`contents`, last {BB_PREVIEW_LINES})", f"last {BB_PREVIEW_LINES}",
         contents(n - BB_PREVIEW_LINES, BB_PREVIEW_LINES)),
        (f"(b) Log page opens at the top (`contents`, {window})", f"first {window}", contents(0, window)),
        (f"(b) Log page at the end (`contents`, {window})", f"last {window}", contents(n - window, window)),
        ("(c) Whole raw log (`/api/v2/logs/L/raw`)", "all", measure(browser, f"/api/v2/logs/{big.logid}/raw", repeat)),
    ]  # fmt: skip
    compressed = {
        "raw log": compressed_size(browser, f"/api/v2/logs/{big.logid}/raw"),
        f"last {window} lines": compressed_size(
            browser, f"/api/v2/logs/{big.logid}/contents?offset={n - window}&limit={window}"
        ),
        "JS bundle": compressed_size(browser, next(f"/{name}" for name, _ in assets if name.endswith(".js"))),
    }
    return {"rows": rows, "assets": assets, "compressed": compressed}


def compressed_size(browser: httpx.Client, path: str) -> int:
    """Bytes on the wire when the client accepts gzip, as browsers do (one fetch)."""
    with browser.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as response:
        return sum(len(chunk) for chunk in response.iter_raw())


def _row(system: str, label: str, lines: str, r: dict[str, Any]) -> str:
    return (
        f"| {system} | {label} | {lines} | {r['ttfb']:.1f} | {r['ttfb_max']:.1f} | {r['total']:.1f} | "
        f"{r['total_max']:.1f} | {_kib(r['bytes'])} |"
    )


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB" if size >= 1024 else f"{size} B"


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in machine.describe())
    loads = "".join(f", {load:.2f} after {name}" for name, load in meta["loads"])
    table, notes = [], []
    outpost, buildbot = results.get("outpost"), results.get("buildbot")
    bb_text = outpost_text = ""
    if outpost is not None:
        table += [_row("Outpost", label, lines, r) for label, lines, r in outpost["rows"]]
        notes += outpost["remarks"]
        outpost_text = _outpost_text(outpost)
    if buildbot is not None and "skipped" in buildbot:
        table.append(f"| Buildbot | skipped: {buildbot['skipped']} | | | | | | |")
    elif buildbot is not None:
        big: BigLog = buildbot["big"]
        table += [_row(f"Buildbot {buildbot['version']}", label, lines, r) for label, lines, r in buildbot["rows"]]
        notes += buildbot["remarks"]
        bb_text = _buildbot_text(buildbot, big, meta)
    remarks = "".join(f"- Remark: {r}\n" for r in notes)
    return f"""## Web UI: a build page with a {meta["lines"]:,}-line log

- **Command**: `{meta["command"]}`.
- **Setup**: each system alone, as its own processes on loopback (SQLite), with the same log:
  {meta["lines"]:,} lines ({meta["log_bytes"] / 1024 / 1024:.1f} MiB, ANSI colours). Each URL is fetched
  {meta["repeat"]} times after 2 warm-ups, one request at a time; medians and maxima. Bodies as sent with
  `Accept-Encoding: identity` (no compression). Browser parsing, JS and rendering are not measured.
{outpost_text}{bb_text}{remarks}
| Machine | |
|---|---|
{machine_rows}
| Load average (1 min) | {meta["load_before"]:.2f} before{loads} |

| System | Request | Lines | TTFB p50 (ms) | TTFB max (ms) | Complete p50 (ms) | Complete max (ms) | Body |
|---|---|--:|--:|--:|--:|--:|--:|
{chr(10).join(table)}
{_assets_table(buildbot)}"""


def _outpost_text(outpost: dict[str, Any]) -> str:
    return f"""- **Outpost** 0.1.0: one finished build whose step log was delivered through the runner protocol;
  a logged-in client. The build page opens on the log's last 500 lines, rendered to HTML on the server
  (ANSI colours as classes, numbered line anchors); earlier lines come 1,000 at a time when asked for.
  Its raw log with `Accept-Encoding: gzip` (one fetch): {_kib(outpost["gzipped_raw"])}.
"""


def _buildbot_text(buildbot: dict[str, Any], big: BigLog, meta: dict[str, Any]) -> str:
    extra = big.num_lines - meta["lines"]
    bundle = sum(size for _, (_, _, size) in buildbot["assets"])
    gzipped = ", ".join(f"{what} {_kib(size)}" for what, size in buildbot["compressed"].items())
    js_size = next(size for name, (_, _, size) in buildbot["assets"] if name.endswith(".js"))
    if buildbot["compressed"]["JS bundle"] >= js_size:
        gzipped += " (static files are served uncompressed)"
    return f"""- **Buildbot** {buildbot["version"]} (master + worker, bench/buildbot_logs.py): one forced build whose
  ShellCommand `cat`s the same bytes ({big.build_seconds:.1f} s from force to finished; not compared, since
  Outpost's log was fed in by the benchmark). Its `stdio` log has {big.num_lines:,} lines ({extra} are
  Buildbot's own: command header and exit status), stored gzip-compressed in SQLite chunks. The raw log
  was checked to contain the step's bytes unchanged.
- **Reading: what compares and what does not.** The raw-log rows compare directly: the same lines, one
  uncompressed GET each (Buildbot's adds a 3-line header and its {extra} step lines). Outpost's build page
  and Buildbot's "log page at the end" carry a similar number of lines but are not the same thing:
  Outpost's body is the whole page, HTML with colours resolved on the server, ready to display; Buildbot's
  is JSON (`logchunks[0].content`, one `o` stream prefix per line, ANSI escapes as `\\u001b`) that the
  app's JavaScript turns into rows. Buildbot's `/` is an empty shell whatever build is asked for (the route
  is in the URL fragment); before any line shows, a browser also needs the app's JS and CSS
  ({bundle / 1024:,.0f} KiB, below; cached after the first visit), has to run it, open the websocket and
  ask for the builder, build, steps and logs (only the log list is measured) and then `contents`. So the
  rows are per request; adding Buildbot's rows up does not give its time to first visible line, and
  Outpost's page time does not include the browser rendering its HTML. The build page's 40-line preview
  is fetched only for a step that is running or did not succeed, or that the user expands: a successful
  step like this one starts collapsed, so Buildbot's build page asks for no log lines at all. Its log page
  opens at line 1 (Outpost's opens at the end); the `contents` rows assume {BB_VISIBLE_ROWS} visible rows
  (its viewer asks for them plus {BB_OVERSCAN} rows of overscan). Buildbot's REST API compresses (br,
  zstd or gzip) when the browser asks, as browsers do; with `Accept-Encoding: gzip` (one fetch each):
  {gzipped}.
"""


def _assets_table(buildbot: dict[str, Any] | None) -> str:
    if buildbot is None or "assets" not in buildbot:
        return ""
    rows = "\n".join(
        f"| `{name}` | {ttfb:.1f} | {total:.1f} | {_kib(size)} |" for name, (ttfb, total, size) in buildbot["assets"]
    )
    return f"""
Buildbot's single-page app, fetched once each (what the shell loads before it can ask for any log line):

| Asset | TTFB (ms) | Complete (ms) | Body |
|---|--:|--:|--:|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    parser.add_argument("--write", type=Path, help="Put the results into this Markdown file.")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    if set(systems) - set(SYSTEMS):
        parser.error(f"unknown system(s): {', '.join(sorted(set(systems) - set(SYSTEMS)))}")
    stop_on_signals()
    command = " ".join([".venv/bin/python", "bench/ui_log.py", *sys.argv[1:]])
    log = log_of(args.lines)
    meta: dict[str, Any] = {"command": command, "lines": args.lines, "log_bytes": len(log), "repeat": args.repeat}
    meta["load_before"], meta["loads"] = machine.load_average(), []
    results: dict[str, dict[str, Any]] = {}
    runners = {"outpost": run_outpost, "buildbot": run_buildbot}
    with tempfile.TemporaryDirectory(prefix="outpost-bench-ui-") as tmp:
        for key in systems:
            print(f"[ui_log] {key} …", file=sys.stderr, flush=True)
            folder = Path(tmp) / key
            folder.mkdir()
            results[key] = runners[key](log, args.repeat, folder)
            if "load" in results[key]:
                meta["loads"].append((key.capitalize(), results[key]["load"]))
    section = render(results, meta)
    print(section)
    if args.write:
        write_section(args.write, section, "bench/ui_log.py")


if __name__ == "__main__":
    main()
