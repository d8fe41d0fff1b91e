"""Buildbot as the web-UI peer: a master and a worker on loopback that run one build printing a big log.

The builder's only step is a ShellCommand named `test` that `cat`s a file the benchmark wrote (the same
bytes Outpost's build gets), with `logEnviron=False` so the step's header is a few lines, not the whole
environment. After the build, `locate()` finds what Buildbot's web UI would ask for: the build, its step,
and the step's `stdio` log (id and line count), all through the REST API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from buildbot_peer import REQUIREMENTS, start_master_and_worker
from loopback import json_of
from peers import ensure_venv, installed_version
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
        started = start_master_and_worker(
            self.procs, self.workdir, bin_dir, MASTER_CFG, {"log": str(log_file)}, BUILDER
        )
        self.api, self.www, self.builderid = started.api, started.www, started.builderid

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
