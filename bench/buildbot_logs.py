"""Buildbot as the web-UI peer: a master and a worker on loopback that run one build printing a big log.

The builder's only step is a ShellCommand named `test` that `cat`s a file the benchmark wrote (the same
bytes Outpost's build gets), with `logEnviron=False` so the step's header is a few lines, not the whole
environment. After the build, `locate()` finds what Buildbot's web UI would ask for: the build, its step,
and the step's `stdio` log (id and line count), all through the REST API.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import loopback
from buildbot_peer import PASSWORD, REQUIREMENTS
from loopback import json_of
from peers import ensure_venv, installed_version, run_tool
from processes import Processes
from waiting import BenchError, deadline_in, past

BUILDER = "big-log"
BUILD_TIMEOUT = 180.0

MASTER_CFG = """\
# Written by bench/buildbot_logs.py: one worker, one forced builder whose only step prints a big log.
import json
import os

from buildbot.plugins import schedulers, steps, util, worker

bench = json.load(open(os.path.join(basedir, "bench.json")))
test = steps.ShellCommand(name="test", command=["cat", bench["log"]], logEnviron=False)
c = BuildmasterConfig = {
    "buildbotNetUsageData": None,
    "title": "bench",
    "buildbotURL": "http://127.0.0.1:%d/" % bench["www_port"],
    "db": {"db_url": "sqlite:///state.sqlite"},
    "protocols": {"pb": {"port": "tcp:%d:interface=127.0.0.1" % bench["pb_port"]}},
    "www": {"port": "tcp:%d:interface=127.0.0.1" % bench["www_port"], "plugins": {}},
    "workers": [worker.Worker("bench", bench["password"])],
    "schedulers": [schedulers.ForceScheduler(name="force", builderNames=["big-log"])],
    "builders": [util.BuilderConfig(name="big-log", workernames=["bench"], factory=util.BuildFactory([test]))],
}
"""


@dataclass(frozen=True)
class BigLog:
    """Where the finished build's log lives, as the SPA learns it from the REST API."""

    builderid: int
    build_number: int
    buildid: int
    stepid: int
    logid: int
    num_lines: int
    build_seconds: float


class BuildbotLogs:
    label = "Buildbot (master + worker)"

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.api: httpx.Client | None = None
        self.www = ""
        self.builderid = 0
        self.version = ""

    def start(self, log_file: Path) -> None:
        bin_dir = ensure_venv("buildbot", REQUIREMENTS)
        self.version = installed_version(bin_dir, "buildbot")
        pb_port, www_port = loopback.free_port(), loopback.free_port()
        master, worker = self.workdir / "master", self.workdir / "worker"
        run_tool([str(bin_dir / "buildbot"), "create-master", "-r", str(master)], "buildbot create-master")
        (master / "master.cfg").write_text(MASTER_CFG)
        settings = {"pb_port": pb_port, "www_port": www_port, "log": str(log_file), "password": PASSWORD}
        (master / "bench.json").write_text(json.dumps(settings))
        create_worker = ["create-worker", "-r", str(worker), f"127.0.0.1:{pb_port}", "bench", PASSWORD]
        run_tool([str(bin_dir / "buildbot-worker"), *create_worker], "buildbot-worker create-worker")
        self.www = f"http://127.0.0.1:{www_port}"
        self.api = loopback.client(f"{self.www}/api/v2")
        master_proc = self.procs.start(
            "buildbot-master", [str(bin_dir / "buildbot"), "start", "--nodaemon", str(master)]
        )
        self.builderid = master_proc.wait_for(self._builder_id, "the Buildbot master's REST API")
        worker_proc = self.procs.start(
            "buildbot-worker", [str(bin_dir / "buildbot-worker"), "start", "--nodaemon", str(worker)]
        )
        worker_proc.wait_for(self._worker_connected, "the Buildbot worker to connect")

    def _builder_id(self) -> int | None:
        builders = self._get("/builders")["builders"]
        return next((int(b["builderid"]) for b in builders if b["name"] == BUILDER), None)

    def _worker_connected(self) -> bool | None:
        workers = self._get("/workers")["workers"]
        return True if any(w["connected_to"] for w in workers) else None

    def _get(self, path: str) -> Any:
        if self.api is None:
            raise BenchError("Buildbot is not started")
        return json_of(self.api.get(path))

    def run_build(self) -> BigLog:
        """Forces one build, waits (bounded) until it has finished successfully, and locates its log."""
        assert self.api is not None
        rpc = {"jsonrpc": "2.0", "method": "force", "params": {"builderid": str(self.builderid)}, "id": 1}
        started = time.monotonic()
        answer = json_of(self.api.post("/forceschedulers/force", json=rpc))
        if "error" in answer:
            raise BenchError(f"Buildbot refused the forced build: {answer['error']}")
        request_id = next(iter(answer["result"][1].values()))
        deadline = deadline_in(BUILD_TIMEOUT)
        while not (request := self._get(f"/buildrequests/{request_id}")["buildrequests"][0])["complete"]:
            if past(deadline):
                raise BenchError(f"Buildbot build request {request_id} did not finish within {BUILD_TIMEOUT:g}s")
            time.sleep(0.2)
        if request["results"] != 0:
            raise BenchError(f"Buildbot build request {request_id} ended with results={request['results']}")
        return self._locate(request_id, time.monotonic() - started)

    def _locate(self, request_id: int, seconds: float) -> BigLog:
        build = self._get(f"/buildrequests/{request_id}/builds")["builds"][0]
        step = next(s for s in self._get(f"/builds/{build['buildid']}/steps")["steps"] if s["name"] == "test")
        log = next(lg for lg in self._get(f"/steps/{step['stepid']}/logs")["logs"] if lg["slug"] == "stdio")
        return BigLog(
            builderid=self.builderid,
            build_number=int(build["number"]),
            buildid=int(build["buildid"]),
            stepid=int(step["stepid"]),
            logid=int(log["logid"]),
            num_lines=int(log["num_lines"]),
            build_seconds=seconds,
        )

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
