"""Outpost under test: its layouts (one process, or a server and a runner) and one timed build.

A build's only step prints `$EPOCHREALTIME` (a bash variable: reading it costs nothing) as its first
command; that is the moment the step starts executing. The client notes the wall clock just before
it sends the POST, then follows the log with the API's long-poll until the build is finished.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import loopback
from loopback import json_of
from processes import Background, Processes
from samples import Timed
from waiting import BenchError, deadline_in, past

PIPELINE = "bench"
STEP = "stamp"
PIPELINE_YAML = f"""\
version: '1.0'
steps:
  {STEP}:
    image: alpine:3.20  # required by the format; the local executor ignores it
    shell: bash
    commands:
      - echo $EPOCHREALTIME
"""
BUILD_TIMEOUT = 60.0

# Dispatch latency broken down with the build's own timestamps: the API's (to the millisecond) and
# `claimed_at`, read from the control plane's SQLite file (an internal column: left out if it moves).
STAGES = (
    ("request", "request sent → build stored"),
    ("claim", "build stored → claimed by the runner's poll"),
    ("handover", "claimed → runner begins the step"),
    ("spawn", "runner begins the step → first command runs"),
    # Off the critical path since the first report carries `started` (a runner of before waited for it).
    ("started", "claimed → build's `started` stored (off the path once the first report carries it)"),
)


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    database: Path


@dataclass(frozen=True)
class BuildTimes:
    """Wall-clock seconds of one build, as seen by the client, the control plane and the step."""

    sent: float
    first_log: float
    finished: float
    step_ran: float  # $EPOCHREALTIME printed by the step
    stored: float  # build created_at (control plane)
    claimed: float | None  # build claimed_at (control plane, as a poll claims it), from the database
    started: float  # build started_at (control plane, on the runner's `started`: its own call, or its first report)
    step_spawning: float  # step started_at (runner, as it begins the step: before it spawns the shell)


LAYOUTS = {
    "embedded": "Outpost, one process (`outpost up`)",
    "separate": "Outpost, server + runner processes",
}


class Outpost:
    """Outpost in one of LAYOUTS, started in `procs`, measured one build at a time."""

    def __init__(self, procs: Processes, workdir: Path, layout: str) -> None:
        self.procs = procs
        self.workdir = workdir
        self.layout = layout
        self.label = LAYOUTS[layout]
        self.version = ""
        self.api: httpx.Client | None = None
        self.target = Target("", "", Path())

    def start(self) -> None:
        if self.layout == "embedded":
            self.target = start_embedded(self.procs, self.workdir)
        else:
            self.target = start_separate(self.procs, self.workdir)
        self.api = loopback.client(self.target.url, token=self.target.token)
        self.version = json_of(self.api.get("/api/v1/health"))["version"]

    def timed_build(self) -> Timed:
        if self.api is None:
            raise BenchError("not started")
        return timed_build(self.api, self.target.database)

    def notes(self) -> list[str]:
        return []

    def close(self) -> None:
        if self.api is not None:
            self.api.close()


def outpost_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "outpost", *args]


def start_embedded(procs: Processes, workdir: Path) -> Target:
    """`outpost up`: control plane and runner in one process (the runner still talks HTTP to it)."""
    data, port = workdir / "up", loopback.free_port()
    up = procs.start("outpost-up", outpost_argv("up", "--port", str(port), "--no-example", "--data-dir", str(data)))
    config = up.wait_for(lambda: _read_json(data / "cli.json"), "`outpost up` to write cli.json")
    target = Target(config["url"], config["token"], data / "outpost.db")
    with loopback.client(target.url, token=target.token) as api:
        _wait_for_runner(api, up, "local")
        _create_pipeline(api, "local")
    return target


def start_separate(procs: Processes, workdir: Path) -> Target:
    """`outpost server`, then `outpost runner start` with an install token, as two processes."""
    data, port = workdir / "server", loopback.free_port()
    server = procs.start("outpost-server", outpost_argv("server", "--port", str(port), "--data-dir", str(data)))
    token = server.wait_for(lambda: _admin_token(data), "the admin token")
    target = Target(f"http://127.0.0.1:{port}", token, data / "outpost.db")
    with loopback.client(target.url, token=target.token) as api:
        server.wait_for(lambda: _answers(api, "/api/v1/whoami"), "the control plane to answer")
        install = json_of(api.post("/api/v1/runtimes", json={"name": "bench"}))["install_token"]
        runner = procs.start(
            "outpost-runner",
            outpost_argv("runner", "start", "--url", target.url, "--name", "bench", "--data-dir", str(workdir / "r")),
            env={"OUTPOST_RUNNER_TOKEN": install},
        )
        _wait_for_runner(api, runner, "bench")
        _create_pipeline(api, "bench")
    return target


def timed_build(api: httpx.Client, database: Path) -> Timed:
    t = _follow_build(api, database)
    stages = {"request": t.stored - t.sent, "spawn": t.step_ran - t.step_spawning}
    if t.claimed is not None:
        stages.update(claim=t.claimed - t.stored, handover=t.step_spawning - t.claimed, started=t.started - t.claimed)
    return Timed(
        metrics={"dispatch": t.step_ran - t.sent, "first_log": t.first_log - t.sent, "end_to_end": t.finished - t.sent},
        stages=stages,
    )


def _follow_build(api: httpx.Client, database: Path) -> BuildTimes:
    sent = time.time()
    build = json_of(api.post(f"/api/v1/pipelines/{PIPELINE}/builds", json={}))
    deadline = deadline_in(BUILD_TIMEOUT)
    cursor, first_log, output = 0, 0.0, b""
    while True:
        response = api.get(f"/api/v1/builds/{build['id']}/log", params={"after": cursor, "wait": 20})
        now = time.time()
        page = json_of(response)
        mine = [base64.b64decode(p["data"]) for p in page["pieces"] if p["step"] == STEP]
        if mine and not first_log:
            first_log = now
        output += b"".join(mine)
        cursor = page["cursor"]
        if page["finished"]:
            return _times(api, database, build["id"], sent, first_log, now, output)
        if past(deadline):
            raise BenchError(f"build {build['id']} did not finish within {BUILD_TIMEOUT:g}s")


def _times(
    api: httpx.Client, database: Path, build_id: str, sent: float, first_log: float, end: float, output: bytes
) -> BuildTimes:
    final = json_of(api.get(f"/api/v1/builds/{build_id}"))
    if final["status"] != "success" or not first_log:
        raise BenchError(f"build {build_id} ended {final['status']} ({final.get('message')}); log {output[:200]!r}")
    try:
        step_ran = float(output.split()[0])
    except (IndexError, ValueError):
        raise BenchError(f"build {build_id}: no timestamp in the step's log {output[:200]!r}") from None
    step = next(s for s in final["steps"] if s["name"] == STEP)
    return BuildTimes(
        sent=sent,
        first_log=first_log,
        finished=end,
        step_ran=step_ran,
        stored=_epoch(final["created_at"]),
        claimed=_claimed_at(database, build_id),
        started=_epoch(final["started_at"]),
        step_spawning=_epoch(step["started_at"]),
    )


def _claimed_at(database: Path, build_id: str) -> float | None:
    """The claim's time from the control plane's SQLite file (read-only; None if the schema moved on)."""
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db,
    ):
        row = db.execute("SELECT claimed_at FROM builds WHERE id = ?", (build_id,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None
    return None


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _admin_token(data: Path) -> str | None:
    path = data / "admin-token"
    token = path.read_text().strip() if path.is_file() else ""
    return token or None


def _answers(api: httpx.Client, path: str) -> bool | None:
    return True if api.get(path).status_code == 200 else None


def _wait_for_runner(api: httpx.Client, proc: Background, runtime: str) -> None:
    def online() -> bool | None:
        runners = json_of(api.get("/api/v1/runners"))
        return True if any(r["online"] and r["runtime"] == runtime for r in runners) else None

    proc.wait_for(online, f"a runner of runtime {runtime!r} to be online")


def _create_pipeline(api: httpx.Client, runtime: str) -> None:
    json_of(api.post("/api/v1/pipelines", json={"name": PIPELINE, "yaml": PIPELINE_YAML, "runtime": runtime}))
