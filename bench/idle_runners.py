"""Idle runners: what N held polls cost one control-plane process, and how fast a build reaches one of them.

One `outpost server` (SQLite, loopback) and one client process. The client registers N runners (each
with its own runner token) and keeps one poll open for each, as an idle runner does (`wait` 30 s,
polled again as soon as it is answered). With the polls held it measures, for each N:

- the server's CPU over a window (utime + stime from /proc/PID/stat: every thread of the process),
  which includes the polls renewed in the window (N / 30 a second);
- its RSS (VmRSS from /proc/PID/status) at the end of the window;
- the dispatch latency of builds queued one at a time while the polls wait: from just before the
  client sends the build request until one of the polls answers with that build (the poller then
  finishes the build so it never comes back);
- what went wrong: polls answered with an error, connections refused or reset.

The polls are written by hand over asyncio streams (HTTP/1.1, keep-alive): an HTTP library would cost
the client more CPU than the server spends on them, and both share the same cores.
`--source DIR` runs the server from DIR/src instead (to measure an older revision: `git archive`).
Every wait is bounded; the server is stopped (SIGTERM, SIGKILL after a grace) whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loopback
import machine
from loopback import json_of
from processes import Background, Processes, stop_on_signals
from waiting import BenchError

PIPELINE = "idle-bench"
RUNTIME = "idle"
YAML = "version: '1.0'\nsteps:\n  s:\n    image: alpine\n    commands:\n      - 'true'\n"
POLL_WAIT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Level:
    polls: int
    load: float = 0.0
    cpu: float = 0.0  # share of one core over the window
    client_cpu: float = 0.0
    rss_mib: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    missed: int = 0  # builds no poll answered within the timeout
    answered: dict[str, int] = field(default_factory=dict)  # poll answers in the window, by status
    errors: list[str] = field(default_factory=list)
    held: int = 0  # polls sent and not answered when the window began
    stop_seconds: float | None = None  # SIGTERM → the server exited, with the polls held
    stop_remark: str | None = None
    stop_answers: dict[str, int] = field(default_factory=dict)  # what the held polls got meanwhile

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else None

        return {
            "polls": self.polls,
            "held": self.held,
            "load": round(self.load, 2),
            "cpu_percent": round(self.cpu * 100, 1),
            "client_cpu_percent": round(self.client_cpu * 100, 1),
            "rss_mib": round(self.rss_mib, 1),
            "dispatch_p50_ms": pct(0.5),
            "dispatch_p90_ms": pct(0.9),
            "dispatched": len(lat),
            "missed": self.missed,
            "answers": self.answered,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
        } | ({"stop_seconds": round(self.stop_seconds, 2), "stop_remark": self.stop_remark,
              "stop_answers": self.stop_answers} if self.stop_seconds is not None else {})  # fmt: skip


class Poller:
    """One idle runner: a keep-alive connection and a poll always open."""

    def __init__(self, bench: Bench, token: str) -> None:
        self.bench, self.token = bench, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        while True:
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted, then a fresh connection after a pause
                self.bench.error(f"{type(exc).__name__}: {exc}")
                self.close()
                await asyncio.sleep(random.uniform(0.5, 1.5))

    async def _poll_once(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.bench.host, self.bench.port)
        assert self.reader is not None
        body = json.dumps({"free_slots": 1, "wait": POLL_WAIT}).encode()
        status, answer = await self._exchange("POST", "/api/runner/v1/poll", body, self.token, {})
        self.bench.count(status)
        if status == 200:
            task = json.loads(answer)["task"]
            if task["kind"] == "run_build":
                self.bench.dispatched(task["build_id"])
                finish = json.dumps({"status": "success"}).encode()
                path = f"/api/runner/v1/builds/{task['build_id']}/finish"
                await self._exchange("POST", path, finish, task["job_token"], {"Outpost-Lease": task["lease_id"]})
        elif status >= 400:
            self.bench.error(f"poll answered {status}: {answer[:120]!r}")
            retry = 1.0 if status != 503 else 2.0
            await asyncio.sleep(random.uniform(retry, 2 * retry))

    async def _exchange(
        self, method: str, path: str, body: bytes, token: str, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.bench.host}:{self.bench.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        async with asyncio.timeout(POLL_WAIT + 30):
            status_line = await self.reader.readuntil(b"\r\n")
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            answer = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Bench:
    def __init__(self, url: str, server: Background) -> None:
        self.url = url
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.server = server
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.answers: dict[str, int] = {}
        self.errors: list[str] = []

    def count(self, status: int) -> None:
        self.answers[str(status)] = self.answers.get(str(status), 0) + 1

    def error(self, what: str) -> None:
        self.errors.append(what)

    def dispatched(self, build_id: str) -> None:
        # A poll may answer before the build request's own answer reached us: the time waits for it.
        future = self.waiting.setdefault(build_id, asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(time.time())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of the line)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise BenchError(f"{need} file descriptors needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def start_server(procs: Processes, workdir: Path, source: Path | None, max_polls: int) -> tuple[Background, str, str]:
    port = loopback.free_port()
    env = {"OUTPOST_RATE_REGISTER": "0", "OUTPOST_RATE_TOKENS": "0", "OUTPOST_MAX_POLLS": str(max_polls)}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    data = workdir / "server"
    argv = [sys.executable, "-m", "outpost", "server", "--port", str(port), "--data-dir", str(data)]
    server = procs.start("outpost-server", argv, env=env)
    token_file = data / "admin-token"
    token = server.wait_for(lambda: token_file.read_text().strip() or None if token_file.is_file() else None, "token")
    url = f"http://127.0.0.1:{port}"
    with loopback.client(url, token=token) as api:
        server.wait_for(lambda: True if api.get("/api/v1/whoami").status_code == 200 else None, "the API")
        json_of(api.post("/api/v1/runtimes", json={"name": RUNTIME}))
        json_of(api.post("/api/v1/pipelines", json={"name": PIPELINE, "yaml": YAML, "runtime": RUNTIME}))
    return server, url, token


async def register(url: str, admin: str, count: int) -> list[str]:
    """`count` runners, each through an install token of its own."""
    import httpx

    tokens: list[str] = []
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, trust_env=False, limits=limits, timeout=60) as http:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> str:
            async with sem:
                made = await http.post(
                    f"/api/v1/runtimes/{RUNTIME}/install-tokens", headers={"Authorization": f"Bearer {admin}"}
                )
                install = json_of(made)["install_token"]
                body = {"install_token": install, "name": f"idle-{i}", "concurrency": 1}
                return str(json_of(await http.post("/api/runner/v1/register", json=body))["runner_token"])

        tokens = list(await asyncio.gather(*(one(i) for i in range(count))))
    return tokens


async def measure_level(
    bench: Bench,
    tokens: list[str],
    admin: str,
    *,
    window: float,
    builds: int,
    timeout: float,
    ramp: float,
    stop: bool = False,
) -> Level:
    import httpx

    level = Level(polls=len(tokens))
    pid = bench.server.proc.pid
    pollers = [Poller(bench, t) for t in tokens]
    tasks: list[asyncio.Task[None]] = []
    for i, p in enumerate(pollers):  # a ramp: runners start over a while, not all in the same instant
        tasks.append(asyncio.create_task(p.run()))
        if i % 50 == 49:
            await asyncio.sleep(50 / ramp)
    try:
        await asyncio.sleep(5.0)  # the last polls reach the server and settle
        bench.answers, bench.errors = {}, []
        level.held = len(tokens)
        level.load = machine.load_average()
        print(f"# {len(tokens)} polls held: the CPU window begins (server pid {pid})", file=sys.stderr, flush=True)
        c0, w0, own0 = cpu_seconds(pid), time.monotonic(), time.process_time()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - w0
        level.cpu = (cpu_seconds(pid) - c0) / elapsed
        level.client_cpu = (time.process_time() - own0) / elapsed
        level.rss_mib = rss_mib(pid)
        level.answered = dict(bench.answers)
        headers = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=bench.url, trust_env=False, headers=headers, timeout=60) as api:
            for _ in range(builds):
                sent = time.time()
                try:
                    made = await api.post(f"/api/v1/pipelines/{PIPELINE}/builds", json={})
                except httpx.TransportError as exc:  # the server could not even take the request
                    level.missed += 1
                    bench.error(f"build request: {type(exc).__name__}")
                    continue
                build_id = json_of(made)["id"]
                future = bench.waiting.setdefault(build_id, asyncio.get_running_loop().create_future())
                try:
                    answered = await asyncio.wait_for(asyncio.shield(future), timeout)
                    level.latencies.append(answered - sent)
                except TimeoutError:
                    level.missed += 1
                    with contextlib.suppress(httpx.TransportError):
                        await api.post(f"/api/v1/builds/{build_id}/cancel")
                await asyncio.sleep(random.uniform(0.2, 0.4))
        level.errors = list(bench.errors)
        if stop:  # SIGTERM with every poll still held: how long the server takes to stop, what the polls get
            bench.answers = {}
            began = time.monotonic()
            level.stop_remark = await asyncio.to_thread(bench.server.stop, 30.0)
            level.stop_seconds = time.monotonic() - began
            level.stop_answers = dict(bench.answers)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in pollers:
            p.close()
    await asyncio.sleep(3.0)  # the server sees the hang-ups
    return level


async def run_all(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    levels = sorted(int(n) for n in args.polls.split(","))
    raise_fd_limit(max(levels) * 2 + 1000)
    rows: list[dict[str, Any]] = []
    with Processes(workdir / "logs", grace=20.0) as procs:
        server, url, admin = start_server(procs, workdir, args.source, args.max_polls)
        bench = Bench(url, server)
        tokens = await register(url, admin, max(levels))
        for n in levels:
            for attempt in range(args.repeat):
                last = n == levels[-1] and attempt == args.repeat - 1
                level = await measure_level(
                    bench,
                    tokens[:n],
                    admin,
                    window=args.window,
                    builds=args.builds,
                    timeout=args.timeout,
                    ramp=args.ramp,
                    stop=last,
                )
                row = level.row() | {"run": attempt + 1}
                print(json.dumps(row), flush=True)
                rows.append(row)
                if not last and not server.alive():
                    raise BenchError(f"the server exited:\n{server.tail()}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--polls", default="500,1000,2000,5000", help="comma-separated numbers of held polls")
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each level")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of the CPU window (≥ one poll's wait)")
    parser.add_argument("--builds", type=int, default=20, help="builds queued one at a time at each level")
    parser.add_argument("--timeout", type=float, default=35.0, help="seconds a build may wait for a poll")
    parser.add_argument("--ramp", type=float, default=250.0, help="polls opened a second at the start of a level")
    parser.add_argument("--max-polls", type=int, default=10_000, help="OUTPOST_MAX_POLLS of the server")
    parser.add_argument("--source", type=Path, help="run the server from DIR/src (an older revision)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    stop_on_signals()
    print(json.dumps({"machine": dict(machine.describe()), "load": machine.load_average()}), flush=True)
    with tempfile.TemporaryDirectory(prefix="outpost-idle-") as tmp:
        try:
            rows = asyncio.run(run_all(args, Path(tmp)))
        except BenchError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return 1
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    with contextlib.suppress(Exception):
        print(f"p50s: {[r.get('dispatch_p50_ms') for r in rows if 'polls' in r]}", file=sys.stderr)
        print(statistics.mean(r["cpu_percent"] for r in rows if "polls" in r), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
