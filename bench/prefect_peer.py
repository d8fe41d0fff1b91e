"""Prefect 3 as a peer: its server, a `process` work pool, a deployment and a worker on loopback.

The flow's first statement notes the time in a file. A flow run is created through the REST API
(`POST /deployments/{id}/create_flow_run`); the worker polls for it every second
(PREFECT_WORKER_QUERY_SECONDS=1) and starts a Python process per run; the finish is seen by polling
the flow run's state every POLL seconds. Prefect's SQLite server sometimes answers 503 under load:
such a create is retried (the clock restarts with the retry) and counted.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

import loopback
from loopback import json_of
from peers import Skipped, ensure_venv, installed_version, run_tool
from processes import Processes
from samples import Timed
from waiting import BenchError, deadline_in, past

REQUIREMENTS = ["prefect>=3,<4"]
POLL = 0.05
BUILD_TIMEOUT = 120.0
START_TIMEOUT = 180.0
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

FLOW = '''\
"""Written by bench/prefect_peer.py: a flow whose first statement notes the time."""
import time

from prefect import flow


@flow
def stamp(path: str) -> None:
    now = time.time()
    with open(path, "w") as f:
        f.write(repr(now))
'''

DEPLOY = """\
import sys

from prefect import flow

source = flow.from_source(source=sys.argv[1], entrypoint="flows.py:stamp")
print(source.deploy(name="bench", work_pool_name="bench", parameters={"path": sys.argv[2]}, print_next_steps=False))
"""


class Prefect:
    label = "Prefect 3 (server + process worker)"

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.stamp = workdir / "stamp"
        self.api: httpx.Client | None = None
        self.deployment = ""
        self.version = ""
        self.retries = 0

    def _env(self, port: int) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.workdir / "home"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.workdir / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "DO_NOT_TRACK": "1",
        }

    def start(self) -> None:
        bin_dir = ensure_venv("prefect", REQUIREMENTS)
        self.version = installed_version(bin_dir, "prefect")
        port = loopback.free_port()
        env = self._env(port)
        prefect = str(bin_dir / "prefect")
        server = self.procs.start(
            "prefect-server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env
        )
        self.api = loopback.client(f"http://127.0.0.1:{port}/api")
        server.wait_for(self._healthy, "the Prefect server", timeout=START_TIMEOUT)
        run_tool([prefect, "work-pool", "create", "bench", "--type", "process"], "prefect work-pool create", env=env)
        flows = self.workdir / "flows"
        flows.mkdir(parents=True, exist_ok=True)
        (flows / "flows.py").write_text(FLOW)
        (self.workdir / "deploy.py").write_text(DEPLOY)
        out = run_tool(
            [str(bin_dir / "python"), str(self.workdir / "deploy.py"), str(flows), str(self.stamp)],
            "deploying the flow",
            env=env,
        )
        self.deployment = out.strip().splitlines()[-1]
        self.procs.start(
            "prefect-worker", [prefect, "worker", "start", "--pool", "bench", "--type", "process"], env=env
        )

    def _healthy(self) -> bool | None:
        assert self.api is not None
        return True if self.api.get("/health").status_code == 200 else None

    def timed_build(self) -> Timed:
        if self.api is None:
            raise Skipped("not started")
        self.stamp.unlink(missing_ok=True)
        sent, run_id = self._create_run()
        finished = self._wait_finished(run_id)
        step_ran = float(self.stamp.read_text())
        return Timed(metrics={"dispatch": step_ran - sent, "end_to_end": finished - sent})

    def _create_run(self) -> tuple[float, str]:
        assert self.api is not None
        for _ in range(10):
            sent = time.time()
            response = self.api.post(f"/deployments/{self.deployment}/create_flow_run", json={})
            if response.status_code != 503:
                return sent, str(json_of(response)["id"])
            self.retries += 1
            time.sleep(0.2)
        raise BenchError("the Prefect server kept answering 503 to create_flow_run")

    def _wait_finished(self, run_id: str) -> float:
        assert self.api is not None
        deadline = deadline_in(BUILD_TIMEOUT)
        while True:
            response = self.api.get(f"/flow_runs/{run_id}")
            now = time.time()
            state = (json_of(response) if response.status_code != 503 else {}).get("state") or {}
            if state.get("type") in FINAL_STATES:
                if state["type"] != "COMPLETED":
                    raise BenchError(f"Prefect flow run {run_id} ended {state['type']}: {state.get('message')}")
                return now
            if past(deadline):
                raise BenchError(f"Prefect flow run {run_id} did not finish within {BUILD_TIMEOUT:g}s")
            time.sleep(POLL)

    def notes(self) -> list[str]:
        return [f"{self.retries} create call(s) answered 503 and were retried"] if self.retries else []

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
