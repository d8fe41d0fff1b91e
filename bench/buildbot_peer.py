"""Buildbot as a peer: a master and a worker (which connects out to the master) on loopback.

A ForceScheduler triggers a builder whose only step is `bash -c 'echo $EPOCHREALTIME > FILE'`; the
trigger is the JSON-RPC `force` call of the REST API, the finish is seen by polling the build request
(Buildbot's REST API has no long-poll), every POLL seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

import loopback
from loopback import json_of
from peers import Skipped, ensure_venv, installed_version, run_tool
from processes import Processes
from samples import Timed
from waiting import BenchError, deadline_in, past

REQUIREMENTS = ["buildbot>=4.3,<5", "buildbot-worker>=4.3,<5", "buildbot-www>=4.3,<5"]
POLL = 0.01
BUILD_TIMEOUT = 60.0
PASSWORD = "bench-only"

MASTER_CFG = """\
# Written by bench/buildbot_peer.py: one worker, one forced builder whose only step notes the time.
import json
import os

from buildbot.plugins import schedulers, steps, util, worker

bench = json.load(open(os.path.join(basedir, "bench.json")))
stamp = steps.ShellCommand(
    name="stamp",
    command=["bash", "-c", 'echo $EPOCHREALTIME > "$BENCH_STAMP"'],
    env={"BENCH_STAMP": bench["stamp"]},
)
c = BuildmasterConfig = {
    "buildbotNetUsageData": None,
    "title": "bench",
    "buildbotURL": "http://127.0.0.1:%d/" % bench["www_port"],
    "db": {"db_url": "sqlite:///state.sqlite"},
    "protocols": {"pb": {"port": "tcp:%d:interface=127.0.0.1" % bench["pb_port"]}},
    "www": {"port": "tcp:%d:interface=127.0.0.1" % bench["www_port"], "plugins": {}},
    "workers": [worker.Worker("bench", bench["password"])],
    "schedulers": [schedulers.ForceScheduler(name="force", builderNames=["stamp"])],
    "builders": [util.BuilderConfig(name="stamp", workernames=["bench"], factory=util.BuildFactory([stamp]))],
}
"""


class Started:
    """A running Buildbot master and connected worker: its REST client, web address and builder id."""

    def __init__(self, api: httpx.Client, www: str, builderid: int) -> None:
        self.api, self.www, self.builderid = api, www, builderid


def start_master_and_worker(
    procs: Processes, workdir: Path, bin_dir: Path, master_cfg: str, settings: dict[str, object], builder: str
) -> Started:
    """Creates a master (its master.cfg reads the ports, the password and `settings` from bench.json) and a
    worker under workdir, starts both, and returns once `builder` exists and the worker is connected."""
    pb_port, www_port = loopback.free_port(), loopback.free_port()
    master, worker = workdir / "master", workdir / "worker"
    run_tool([str(bin_dir / "buildbot"), "create-master", "-r", str(master)], "buildbot create-master")
    (master / "master.cfg").write_text(master_cfg)
    config = {"pb_port": pb_port, "www_port": www_port, "password": PASSWORD, **settings}
    (master / "bench.json").write_text(json.dumps(config))
    create_worker = ["create-worker", "-r", str(worker), f"127.0.0.1:{pb_port}", "bench", PASSWORD]
    run_tool([str(bin_dir / "buildbot-worker"), *create_worker], "buildbot-worker create-worker")
    www = f"http://127.0.0.1:{www_port}"
    api = loopback.client(f"{www}/api/v2")

    def builder_id() -> int | None:
        builders = json_of(api.get("/builders"))["builders"]
        return next((int(b["builderid"]) for b in builders if b["name"] == builder), None)

    def worker_connected() -> bool | None:
        workers = json_of(api.get("/workers"))["workers"]
        return True if any(w["connected_to"] for w in workers) else None

    master_proc = procs.start("buildbot-master", [str(bin_dir / "buildbot"), "start", "--nodaemon", str(master)])
    builderid = master_proc.wait_for(builder_id, "the Buildbot master's REST API")
    worker_proc = procs.start("buildbot-worker", [str(bin_dir / "buildbot-worker"), "start", "--nodaemon", str(worker)])
    worker_proc.wait_for(worker_connected, "the Buildbot worker to connect")
    return Started(api, www, builderid)


class Buildbot:
    label = "Buildbot (master + worker)"

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.stamp = workdir / "stamp"
        self.api: httpx.Client | None = None
        self.builderid = 0
        self.version = ""

    def start(self) -> None:
        bin_dir = ensure_venv("buildbot", REQUIREMENTS)
        self.version = installed_version(bin_dir, "buildbot")
        started = start_master_and_worker(
            self.procs, self.workdir, bin_dir, MASTER_CFG, {"stamp": str(self.stamp)}, "stamp"
        )
        self.api, self.builderid = started.api, started.builderid

    def timed_build(self) -> Timed:
        if self.api is None:
            raise Skipped("not started")
        self.stamp.unlink(missing_ok=True)
        rpc = {"jsonrpc": "2.0", "method": "force", "params": {"builderid": str(self.builderid)}, "id": 1}
        sent = time.time()
        answer = json_of(self.api.post("/forceschedulers/force", json=rpc))
        if "error" in answer:
            raise BenchError(f"Buildbot refused the forced build: {answer['error']}")
        request_id = next(iter(answer["result"][1].values()))
        finished, results = self._wait_finished(request_id)
        if results != 0:
            raise BenchError(f"Buildbot build request {request_id} ended with results={results}")
        step_ran = float(self.stamp.read_text())
        return Timed(metrics={"dispatch": step_ran - sent, "end_to_end": finished - sent})

    def _wait_finished(self, request_id: int) -> tuple[float, int]:
        assert self.api is not None
        deadline = deadline_in(BUILD_TIMEOUT)
        while True:
            response = self.api.get(f"/buildrequests/{request_id}")
            now = time.time()
            request = json_of(response)["buildrequests"][0]
            if request["complete"]:
                return now, int(request["results"])
            if past(deadline):
                raise BenchError(f"Buildbot build request {request_id} did not finish within {BUILD_TIMEOUT:g}s")
            time.sleep(POLL)

    def notes(self) -> list[str]:
        return []

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
