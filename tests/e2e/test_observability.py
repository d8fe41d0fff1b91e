"""Observability with real processes: a control plane and a runner started with --log-format json, the runner with
--metrics-listen; one build moves both /metrics endpoints, and every log line is JSON naming its runner and build."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.processes import (
    ControlPlane,
    Process,
    eventually,
    launch_runner,
    listening_inodes,
    outpost_env,
    socket_inodes,
)

PIPELINE = """version: '1.0'
steps:
  main:
    image: alpine
    commands: ['for i in $(seq 1 300); do echo "line $i"; done', 'sleep 1']
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def json_lines(log: str) -> list[dict[str, Any]]:
    """The log's lines from its process (not the test harness's `=== start` headers), each parsed."""
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("=== start")]
    return [json.loads(line) for line in lines]


def test_a_build_moves_both_metrics_endpoints_and_every_json_log_line_names_its_runner_and_build(
    tmp_path: Path, processes: list[Process]
) -> None:
    control_plane = ControlPlane(tmp_path, OUTPOST_LOG_FORMAT="json")
    processes.append(control_plane)
    control_plane.start()
    token = control_plane.install_token()
    runner = launch_runner(
        processes, tmp_path, control_plane.url, token, "--metrics-listen", "127.0.0.1:0", "--log-format", "json"
    )
    announced = eventually(
        lambda: re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", runner.output()),
        timeout=30,
        what="the runner's metrics address",
    )
    metrics_url = announced.group(1)
    with control_plane.api() as api:
        assert api.post("/pipelines", json={"name": "counted", "yaml": PIPELINE}).status_code == 201
        build_id = api.post("/pipelines/counted/builds", json={}).json()["id"]
        runner_id = eventually(lambda: [r["id"] for r in api.get("/runners").json()], timeout=30, what="the runner")[0]
    control_plane.wait_for(build_id, {"running"}, timeout=30)
    # The only port the runner listens on is the one it was asked for, on loopback.
    listening = socket_inodes(runner.pid) & listening_inodes()
    assert len(listening) == 1
    during = samples(httpx.get(metrics_url, timeout=10).text)
    assert during[("outpost_runner_builds_running", ())] == 1
    control_plane.wait_for(build_id, {"success"}, timeout=60)
    eventually(lambda: "finished and delivered" in runner.output(), timeout=30, what="the build to be delivered")

    ran = samples(httpx.get(metrics_url, timeout=10).text)
    headers = {"Authorization": f"Bearer {control_plane.token}"}
    served = samples(httpx.get(control_plane.url + "/metrics", headers=headers, timeout=10).text)
    assert ran[("outpost_runner_polls_total", (("result", "tasks"),))] >= 1
    assert ran[("outpost_runner_reports_total", (("result", "sent"),))] >= 1
    assert ran[("outpost_runner_builds_running", ())] == 0
    assert served[("outpost_builds_finished_total", (("status", "success"),))] == 1
    assert served[("outpost_dispatch_latency_seconds_count", ())] == 1
    assert served[("outpost_runners_online", (("account", "default"), ("runtime", "local")))] == 1
    sent, received = ran[("outpost_runner_log_sent_bytes_total", ())], served[("outpost_log_received_bytes_total", ())]
    assert sent == received > len("".join(f"line {i}\n" for i in range(1, 301)))
    assert httpx.get(control_plane.url + "/metrics", timeout=10).status_code == 401

    runner_lines = json_lines(runner.output())
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in runner_lines)
    registered = next(i for i, line in enumerate(runner_lines) if line["message"].startswith("runner "))
    assert all(line.get("runner_id") == runner_id for line in runner_lines[registered:])
    about_build = [line for line in runner_lines if build_id in line["message"]]
    assert about_build, "the runner logs the build it runs"
    assert all(line.get("build_id") == build_id for line in about_build)
    assert all(line.get("account") == "default" for line in about_build)

    # The control plane's own lines are JSON too; what it prints for a person (its address) is not a log line.
    server_lines = [line for line in control_plane.output().splitlines() if line.startswith("{")]
    assert server_lines
    assert all({"time", "level", "logger", "message"} <= json.loads(line).keys() for line in server_lines)


def test_outpost_up_writes_json_lines_where_only_the_embedded_runners_name_the_runner(
    tmp_path: Path, processes: list[Process]
) -> None:
    up = Process(
        "outpost up", ["up", "--port", "0", "--log-format", "json"], tmp_path / "up.log", outpost_env(), cwd=tmp_path
    )
    processes.append(up)
    up.start()
    eventually(lambda: "success in" in up.output(), timeout=60, what="the example build")
    up.signal(signal.SIGINT)
    assert up.wait(30) == 0

    lines = json_lines((tmp_path / ".outpost" / "outpost.log").read_text())
    runner_id = json.loads((tmp_path / ".outpost" / "runner" / "runner.json").read_text())["runner_id"]
    started = [line for line in lines if line["logger"] == "outpost.runner.job" and "started" in line["message"]]
    assert len(started) == 1
    assert started[0]["build_id"] in started[0]["message"]
    assert started[0]["runner_id"] == runner_id
    served = [line for line in lines if line["logger"].startswith("uvicorn")]
    assert served
    assert not any("runner_id" in line for line in served)  # the control plane's lines, in the same process
