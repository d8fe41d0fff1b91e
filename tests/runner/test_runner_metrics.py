"""The runner's metrics (--metrics-listen): served on its own loop, and moving as it polls, runs and reports
(the runner in-process against the real app; tests/e2e/test_observability.py runs it as a process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from outpost.errors import OutpostError
from outpost.runner.agent import Runner, RunnerIdentity, RunnerOptions
from outpost.runner.client import ProtocolClient, Unreachable
from outpost.runner.metrics import RunnerMetrics, parse_listen
from outpost.wire import PollRequest
from tests.runner.test_runner import FlakyTransport
from tests.stack import BASE, Stack

SLOW = """version: '1.0'
steps:
  main:
    image: alpine
    commands: ['for i in $(seq 1 200); do echo "line $i"; done', 'sleep 1.5', 'echo done']
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(server: asyncio.Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    host, port = server.sockets[0].getsockname()[:2]
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://{host}:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return samples(r.text)


async def runner_with_metrics(stack: Stack, tmp_path: Path, transport: httpx.AsyncBaseTransport) -> Runner:
    observed = RunnerMetrics()
    identity = RunnerIdentity.registered(BASE, await stack.register())
    options = RunnerOptions(url=BASE, data_dir=tmp_path / "runner", poll_wait=1.0)
    runner = Runner(ProtocolClient(BASE, transport=transport, observer=observed), identity, options)
    observed.runner = runner
    return runner


async def test_the_runners_metrics_follow_a_build_and_match_what_the_control_plane_received(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.pipeline("slow", SLOW)
    build = await stack.run("slow")
    runner = await runner_with_metrics(stack, tmp_path, httpx.ASGITransport(app=stack.app))
    observed = runner.client.observer
    assert isinstance(observed, RunnerMetrics)
    server = await observed.serve("127.0.0.1", 0)
    running = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            while (await stack.build(build["id"]))["status"] != "running":
                await asyncio.sleep(0.05)
        during = await scrape(server)
        assert during[("outpost_runner_builds_running", ())] == 1
        assert during[("outpost_runner_slots_free", ())] == 0
        assert during[("outpost_runner_polls_total", (("result", "tasks"),))] >= 1
        async with asyncio.timeout(30):
            while (await stack.build(build["id"]))["status"] != "success":
                await asyncio.sleep(0.05)
            while runner.jobs:  # the build's last report is accepted, then it lets go
                await asyncio.sleep(0.05)
        after = await scrape(server)
    finally:
        runner.stop()
        await running
        server.close()
        await server.wait_closed()
    assert after[("outpost_runner_builds_running", ())] == 0
    assert after[("outpost_runner_slots_free", ())] == 1
    assert after[("outpost_runner_outbox_bytes", ())] == 0
    assert after[("outpost_runner_reports_total", (("result", "sent"),))] >= 1
    assert after[("outpost_runner_reports_total", (("result", "failed"),))] == 0
    assert after[("outpost_runner_lease_renewals_total", (("result", "ok"),))] >= 1  # the step sleeps 1.5 s
    async with stack.client() as c:
        received = samples((await c.get("/metrics")).text)[("outpost_log_received_bytes_total", ())]
    assert after[("outpost_runner_log_sent_bytes_total", ())] == received > 200 * len("line 200\n")


async def test_polls_that_fail_are_counted_as_failed(stack: Stack, tmp_path: Path) -> None:
    network = FlakyTransport(httpx.ASGITransport(app=stack.app))
    runner = await runner_with_metrics(stack, tmp_path, network)
    observed = runner.client.observer
    assert isinstance(observed, RunnerMetrics)
    network.down = True
    with pytest.raises(Unreachable):
        await runner.client.poll(runner.identity.token, PollRequest(wait=0))
    network.down = False
    await runner.client.poll(runner.identity.token, PollRequest(wait=0))
    found = samples(observed.exposition().decode())
    assert found[("outpost_runner_polls_total", (("result", "failed"),))] == 1
    assert found[("outpost_runner_polls_total", (("result", "empty"),))] == 1
    await runner.client.aclose()


async def test_the_metrics_endpoint_answers_only_get_metrics_and_hangs_up_on_garbage() -> None:
    server = await RunnerMetrics().serve("127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
            assert (await client.get("/")).status_code == 404
            assert (await client.post("/metrics", content=b"x")).status_code == 405
            assert (await client.get("/metrics?x=1")).status_code == 200
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x00\xff not http at all\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # hung up, nothing said
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_metrics_listen_takes_host_and_port_and_a_bare_port_means_loopback() -> None:
    assert parse_listen("9252") == ("127.0.0.1", 9252)
    assert parse_listen(":9252") == ("127.0.0.1", 9252)
    assert parse_listen("0.0.0.0:9252") == ("0.0.0.0", 9252)
    assert parse_listen("[::1]:9252") == ("::1", 9252)
    for bad in ("", "host:", "host:port", "127.0.0.1:70000"):
        with pytest.raises(OutpostError, match="expected HOST:PORT"):
            parse_listen(bad)
